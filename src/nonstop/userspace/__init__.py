"""The userspace live patching engine: replace functions of a shared library in running processes.

One module per concern:

- ``procfs``: /proc readers (maps, tasks, thread status), nothing ptrace.
- ``discovery``: which processes map a file with a given build-id.
- ``memory``: /proc/PID/mem reads and writes.
- ``image``: the loaded modules of one process and ld.so's search order.
- ``elfmodel``: what the engine needs from one ELF file, cached per file content
  (SHA-256 of the mapped file), never per build-id.
- ``scope``: symbol lookup in one running process the way ld.so resolves it.
- ``linker``: lays out and relocates the patch object for one process.
- ``sites``: capstone validation of function entry sites.
- ``trampoline``: relocating the instructions an entry jump displaces.
- ``dispatch``: per-level stubs that switch all functions at one commit-flag write.
- ``ptrace``: ctypes ptrace: seize, interrupt, wait with timeout, registers.
- ``inject``: crash-safe syscall injection through a seccomp-free thread.
- ``region``: the named patch memory (memfd) and its in-process header.
- ``memfd``: taking the patch memfd out of the target (pidfd_getfd) and proving it
  fresh before root writes it.
- ``header``: strict validation of a header document read from a process.
- ``placement``: choosing an address within rel32 reach of the library.
- ``safety``: is it safe to switch now (RIP and conservative stack scan)?
- ``lock``: one patcher per process.
- ``stopwindow``: stopping all (or one) threads and always releasing them.
- ``transaction``: apply / replace / revert and crash recovery for one process.
- ``engine``: the public entry points used by the agent.
- ``bundles``: from a verified bundle to what the engine applies.
- ``errors``: the exceptions, all under ``EngineError``.

How it works and its safety rules: docs/userspace-engine.md.
"""

from nonstop.userspace.engine import Engine, EngineOptions, PatchSpec, ProcessResult
from nonstop.userspace.errors import EngineError

__all__ = ["Engine", "EngineError", "EngineOptions", "PatchSpec", "ProcessResult"]
