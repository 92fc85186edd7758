"""Turning source fixes into signed live-patch bundles.

``userspace``: a recipe (library, source, compiler, ordered fixes) becomes one
cumulative bundle per level. The original and each patched tree are built with
``-ffunction-sections -fdata-sections``; their objects are compared function by
function; what cannot be patched live safely is refused with its reason; what
can is assembled into a relocatable patch object, signed with the target's
symbol map.
"""
