"""Builders: turning source fixes into signed cumulative bundles (`nonstop build ...`).

``cli`` owns the ``build`` command group; each builder sub-package registers
one sub-command there: ``kernel`` (livepatch modules via kbuild),
``userspace`` (patch objects from a per-function object diff) and ``debian``
(the per-CVE plan of a Debian security update, first step towards its levels).
"""
