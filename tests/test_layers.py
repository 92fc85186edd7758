"""The part order of docs/architecture.md, enforced on every import in src/nonstop.

Parts import only parts below them (bundle < userspace, kernel, cve < builders,
server < agent < cli, demo), parts on one level do not import each other, and
no module imports itself back through others, whether the import is at the
top of a file or inside a function. `make lint` runs this file too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "nonstop"

# Part -> level. The modules directly in the package that every part may use (SHARED) sit
# below all parts and import none.
LEVELS = {
    "bundle": 0,
    "userspace": 1,
    "kernel": 1,
    "cve": 1,
    "builders": 2,
    "server": 2,
    "agent": 3,
    "cli": 5,  # assembles every part's commands, the demo's included
    "demo": 4,
}
SHARED = {"__init__", "console", "files"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def imported(path: Path, name: str, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The nonstop modules PATH imports anywhere in its body, with the line of each import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in known else base), node.lineno


def part(name: str) -> str:
    pieces = name.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target, _ in imported(path, name, known) if target != name}
        for name, path in known.items()
    }


def test_every_part_has_a_level() -> None:
    unplaced = {part(name) for name in modules()} - set(LEVELS) - SHARED
    assert not unplaced, f"parts missing from the layer order (tests/test_layers.py): {unplaced}"


def test_imports_point_down_the_part_order() -> None:
    known = modules()
    wrong = []
    for name, path in known.items():
        source = part(name)
        for target, line in imported(path, name, known):
            destination = part(target)
            if destination in SHARED or destination == source:
                continue
            if source in SHARED or LEVELS.get(destination, 99) >= LEVELS.get(source, -1):
                wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {source} imports {target}")
    assert not wrong, "imports against bundle < userspace/kernel < builders/server < agent < " + (
        "cli/demo:\n" + "\n".join(wrong)
    )


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "modules that import each other in a loop:\n" + "\n".join(
        " <-> ".join(component) for component in found
    )


def test_the_checks_catch_what_they_forbid() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert part("nonstop.kernel.manager") == "kernel" and part("nonstop") == "__init__"
