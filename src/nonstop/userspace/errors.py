"""Exceptions of the userspace engine; each message is one line naming the cause."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: the engine cannot carry out an operation."""


class RefusedError(EngineError):
    """The patch cannot be applied to this process, decided before anything was changed."""


class BusyError(EngineError):
    """The process never reached a safe state within the retry bound; nothing was changed."""


class ProcessGoneError(EngineError):
    """The process (or the thread needed) exited while the engine was working on it."""


class LinkError(RefusedError):
    """A relocation or symbol of the patch object cannot be resolved in this process."""


class SiteError(RefusedError):
    """A function entry cannot carry a jump safely (too short, branch target, bytes differ)."""


class PtraceError(EngineError):
    """A ptrace request failed in a way that is not the process exiting."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno
