"""The kernel driver's one error root: callers catch ``KernelError`` for any kernel failure."""

from __future__ import annotations


class KernelError(Exception):
    """A kernel operation cannot be carried out; the message is one line naming the cause."""
