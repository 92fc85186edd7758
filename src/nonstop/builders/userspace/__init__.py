"""`nonstop build userspace`: a recipe in, one signed cumulative bundle per level out.

The original and each patched tree are built with ``-ffunction-sections
-fdata-sections`` (``driver``, ``ccwrap``); the target is reproduced and its
symbol map taken (``reproduce``); objects are compared function by function
(``elfobj``, ``differ``, ``linenumbers``); what cannot be patched live safely is
refused with its reason (``dwarf``, ``analysis``); what can is assembled into a
relocatable patch object (``patchobj``, ``elfwriter``, ``targetsyms``) and
signed per level (``builder``), with a report (``report``). Recipes: ``recipe``.
"""
