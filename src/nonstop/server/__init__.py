"""The patch server: keeps the fleet's signed bundles, decides what each host gets.

One FastAPI application (``app.py``) over SQLAlchemy (``models.py``, migrations
in ``migrations/``), stateless per request so several replicas can share one
PostgreSQL database. Hosts register with a registration key, check in with
their inventory and download the bundles the feed policy (``policy.py``) offers
them; admins manage keys, bundles, feeds and hosts with scoped API tokens.
"""
