"""`nonstop build kernel`: livepatch modules built against the exact target kernel.

``packages`` (Debian kernel packages unpacked in a cache dir), ``image`` (the
build-id of a kernel image), ``recipe`` (the recipe file), ``module`` (kbuild
and level stamping), ``builder`` (the pipeline and the command).
"""
