"""Kernel live patching through the upstream livepatch subsystem (/sys/kernel/livepatch).

The driver knows nothing of the agent: what the agent does with a kernel
bundle (identity, levels, guard) is ``nonstop.agent.kernel_levels``.

Modules, by what they own:

- ``errors``: ``KernelError``, the root of every exception raised here.
- ``syscalls``: loading and removing kernel modules (finit_module, delete_module) via ctypes.
- ``modinfo``: reading a ``.ko`` file's ``.modinfo`` section (name, vermagic, nonstop stamps).
- ``tasks``: which tasks still block a livepatch transition, from /proc/*/task/*/patch_state.
- ``livepatch``: the sysfs driver: load, wait for the transition, revert, replace, disable, unload.
- ``guard``: the crash-loop guard, a small state machine over the agent's kernel state.
"""
