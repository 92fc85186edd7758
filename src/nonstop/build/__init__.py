"""Builders: turning source fixes into signed bundles (`nonstop build ...`).

``cli`` owns the ``build`` command group; each builder module registers one
sub-command there. Kernel: ``kernel_packages`` (Debian kernel packages in a
cache dir), ``kernel_image`` (the build-id of a kernel image),
``kernel_recipe`` (the recipe file), ``kernel_module`` (kbuild), ``kernel``
(the pipeline and ``nonstop build kernel``).
"""
