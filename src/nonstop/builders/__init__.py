"""Builders: turning source fixes into signed cumulative bundles (`nonstop build ...`).

``cli`` owns the ``build`` command group; each builder sub-package registers
one sub-command there: ``kernel`` (livepatch modules via kbuild) and
``userspace`` (patch objects from a per-function object diff).
"""
