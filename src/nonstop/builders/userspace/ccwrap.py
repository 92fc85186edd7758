"""The compiler wrapper every recipe build runs through (standard library only).

The build driver puts this script on PATH as ``cc``, ``gcc`` and the recipe
compiler's own name, so any build system (make, autotools, debhelper) reaches
it. It appends the driver's extra flags to each compilation, records every
invocation (working directory and final arguments) as one JSON line, then
executes the real compiler. Link commands are recorded too: that is how the
driver learns which object files make up the target library.

Environment (set by the driver): NONSTOP_CC_REAL (absolute path of the real
compiler), NONSTOP_CC_LOG (JSON-lines file), NONSTOP_CC_EXTRA (flags appended
to compilations, space-separated), NONSTOP_CC_DEBUG=1 (add ``-g`` to
compilations that lack debug information: the safety analysis reads DWARF, and
GCC promises ``-g`` does not change generated code).
"""

from __future__ import annotations

import json
import os
import sys


def has_debug_flag(argv: list[str]) -> bool:
    level = None
    for arg in argv:
        if arg.startswith("-g") and not arg.startswith(("-gno-", "-gz", "-gsplit")):
            level = arg
    return level is not None and level != "-g0"


def wrap(argv: list[str]) -> list[str]:
    """The real compiler's arguments for this invocation."""
    if "-c" not in argv:
        return argv
    extra = os.environ.get("NONSTOP_CC_EXTRA", "").split()
    if os.environ.get("NONSTOP_CC_DEBUG") == "1" and not has_debug_flag(argv):
        extra.append("-g")
    return argv + extra


def main() -> None:
    """Log this invocation (if NONSTOP_CC_LOG is set), then exec the real compiler.

    Never returns. The line is logged before the compiler runs, so failed
    compilations are in the log too.
    """
    real = os.environ["NONSTOP_CC_REAL"]
    argv = wrap(sys.argv[1:])
    log = os.environ.get("NONSTOP_CC_LOG")
    if log:
        line = json.dumps({"cwd": os.getcwd(), "argv": argv}) + "\n"
        # O_APPEND keeps lines from parallel compilers whole.
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    os.execv(real, [real, *argv])


if __name__ == "__main__":
    main()
