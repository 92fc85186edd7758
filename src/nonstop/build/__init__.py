"""Builders: turning source fixes into signed bundles (`nonstop build ...`).

``cli`` owns the ``build`` command group; each builder module registers one
sub-command there. Kernel: ``kernel_packages`` (Debian kernel packages in a
cache dir), ``kernel_image`` (the build-id of a kernel image),
``kernel_recipe`` (the recipe file), ``kernel_module`` (kbuild), ``kernel``
(the pipeline and ``nonstop build kernel``).

Userspace (``userspace``: ``nonstop build userspace``): a recipe (library,
source, compiler, ordered fixes) becomes one cumulative bundle per level. The
original and each patched tree are built with ``-ffunction-sections
-fdata-sections``; their objects are compared function by function; what cannot
be patched live safely is refused with its reason; what can is assembled into a
relocatable patch object, signed with the target's symbol map.
"""
