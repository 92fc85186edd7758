"""Kernel live patching through the upstream livepatch subsystem (/sys/kernel/livepatch).

Modules, by what they own:

- ``syscalls``: loading and removing kernel modules (finit_module, delete_module) via ctypes.
- ``modinfo``: reading a ``.ko`` file's ``.modinfo`` section (name, vermagic, nonstop stamps).
- ``tasks``: which tasks still block a livepatch transition, from /proc/*/patch_state.
- ``livepatch``: the sysfs driver: load, wait for the transition, revert, replace, disable, unload.
- ``guard``: the crash-loop guard, a small state machine over the agent's kernel state.
- ``manager``: what the agent does with a verified kernel bundle: identity, levels, guard, driver.
"""
