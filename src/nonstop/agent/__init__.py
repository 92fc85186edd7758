"""The host agent `nonstopctl`: its configuration, local state and commands.

The agent is the only part that touches a live system: it verifies bundles and
hands them to the engines (`nonstop.userspace`, `nonstop.kernel`).
"""
