"""100 successive levels: cumulative replace vs stacking, measured in the same run
(VMA count and Private_Dirty of two identical processes).

    .venv/bin/python bench/userspace_levels.py [LEVELS]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from nonstop.userspace import Engine, EngineOptions
from userspace_common import (
    build_fixtures,
    nsfix_spec,
    private_dirty_kb,
    require_root,
    start_program,
    vma_count,
)


def main() -> None:
    require_root()
    levels = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    build_fixtures()
    specs = [nsfix_spec(level) for level in range(1, levels + 1)]
    replace_proc = start_program(0, 1)
    stack_proc = start_program(0, 1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            replace = Engine(EngineOptions(lock_dir=Path(tmp)))
            stacking = Engine(EngineOptions(lock_dir=Path(tmp), keep_old_levels=True))
            base = {
                p.pid: (vma_count(p.pid), private_dirty_kb(p.pid))
                for p in (replace_proc, stack_proc)
            }
            first = {}
            for index, spec in enumerate(specs):
                for engine, proc in ((replace, replace_proc), (stacking, stack_proc)):
                    result = engine.apply(proc.pid, spec)
                    assert result.result == "patched", result
                    if index == 0:
                        first[proc.pid] = (vma_count(proc.pid), private_dirty_kb(proc.pid))
            print(f"{levels} successive levels applied to two identical processes")
            for label, proc in (("replace (nonstop)", replace_proc), ("stacking", stack_proc)):
                vmas0, dirty0 = base[proc.pid]
                vmas1, dirty1 = first[proc.pid]
                vmas, dirty = vma_count(proc.pid), private_dirty_kb(proc.pid)
                print(f"  {label:18} VMAs {vmas0} -> {vmas1} (level 1) -> {vmas} (level {levels}): "
                      f"+{vmas - vmas0}; Private_Dirty {dirty0} -> {dirty1} -> {dirty} kB: "
                      f"+{dirty - dirty0} kB")  # fmt: skip
            added_replace = vma_count(replace_proc.pid) - base[replace_proc.pid][0]
            added_stack = vma_count(stack_proc.pid) - base[stack_proc.pid][0]
            print(f"  VMAs added, stacking / replace: {added_stack} / {added_replace}")
    finally:
        for proc in (replace_proc, stack_proc):
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
