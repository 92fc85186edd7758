"""Alembic migrations of the server database, shipped inside the package.

Applied by `nonstop db upgrade` (and on the first start of an empty database)
through ``nonstop.server.migrate``. A new revision is a file in ``versions/``
named ``revNNNN_<what>.py`` whose ``down_revision`` is the previous one; the
schema it produces must equal ``nonstop.server.models`` (a test checks).
"""
