"""Applying an update's patches to the ``--from`` tree, and taking them off again.

A level's tree is the original tree plus the patch steps of the CVEs built so
far plus those of the CVE being tried. A step applies a patch the update
added, or, for a patch the update changed, takes the old version off and puts
the new one on. Before any file changes it is copied aside, so ``reset``
brings the tree back to the original exactly (files a patch created are
removed); the copies are also the original sources the analysis reads.
A CVE's steps are tried in series order and then, if one does not apply yet,
again after the others (a CVE split over several patches may need another
order on the older tree); ``patch --dry-run`` first, so a step that does not
apply changes nothing.

Some packages compile copies of their sources that the build makes (expat's
``debian/rules`` copies ``expat/`` into ``src/`` and ``srcw/`` and builds
each): a patched file that no compilation reads gets its new content written
to its copies, the files of the same name and the same original bytes that
compilations do read, saved aside like any other changed file.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nonstop.builders.debian.patches import PatchChange


@dataclass(frozen=True)
class Step:
    """One patch to put on (REVERSE: take off) with ``patch -pSTRIP``."""

    label: str
    name: str
    """The patch's name in the series."""
    patch: Path
    strip: int
    files: tuple[str, ...]
    reverse: bool = False


def steps_for(change: PatchChange, old_patches: Path, new_patches: Path) -> list[Step]:
    """The steps that turn the old tree's state of CHANGE's patch into the new one."""
    new = change.patch
    steps = []
    if change.status == "changed":
        old = old_patches / new.name
        steps.append(
            Step(
                f"{new.name} (old version off)", new.name, old, new.strip, tuple(new.changes), True
            )
        )
    steps.append(Step(new.name, new.name, new_patches / new.name, new.strip, tuple(new.changes)))
    return steps


class PatchedTree:
    """The original TREE, changed only through :meth:`apply`, restorable with :meth:`reset`.

    COMPILED: the files (relative to TREE) that the libraries' compilations read."""

    def __init__(self, tree: Path, originals: Path, compiled: frozenset[str] = frozenset()) -> None:
        self.tree, self.originals, self.compiled = tree, originals, compiled
        self.originals.mkdir(parents=True, exist_ok=True)
        self.saved: set[str] = set()
        self.created: set[str] = set()
        self._copies: dict[str, list[str]] = {}

    def reset(self) -> None:
        """Every file back as the original build had it."""
        for relative in self.saved:
            shutil.copy2(self.originals / relative, self.tree / relative)
        for relative in self.created:
            (self.tree / relative).unlink(missing_ok=True)

    def apply(self, step: Step) -> str | None:
        """Apply STEP; None if it applied, else why not (the tree is then unchanged)."""
        for relative in step.files:
            self._save(relative)
        argv = [
            "patch",
            f"-p{step.strip}",
            "--batch",
            "--no-backup-if-mismatch",
            "-i",
            str(step.patch),
        ]
        argv += ["--reverse"] if step.reverse else ["--forward"]
        trial = self._patch([*argv, "--dry-run"])
        if trial is not None:
            return trial
        failure = self._patch(argv)
        if failure is None:
            for relative in step.files:
                for copy in self.copies(relative):
                    self._save(copy)
                    shutil.copyfile(self.tree / relative, self.tree / copy)
        return failure

    def copies(self, relative: str) -> list[str]:
        """The build-time copies compiled in place of RELATIVE (module docstring); none when
        a compilation reads RELATIVE itself or it did not exist in the original tree."""
        if relative not in self._copies:
            original = self.originals / relative
            found = []
            if relative not in self.compiled and relative in self.saved:
                data = original.read_bytes()
                found = [
                    other
                    for other in sorted(self.compiled)
                    if Path(other).name == original.name
                    and (
                        self.originals / other if other in self.saved else self.tree / other
                    ).read_bytes()
                    == data
                ]
            self._copies[relative] = found
        return self._copies[relative]

    def apply_in_some_order(self, steps: list[Step]) -> tuple[list[Step], str | None]:
        """STEPS applied in series order, a step that fails retried after the others.

        Returns the order that worked, or the steps applied and why the first
        of the rest does not apply."""
        pending, done = list(steps), []
        while pending:
            progress = False
            failures: list[str] = []
            for step in list(pending):
                reason = self.apply(step)
                if reason is None:
                    done.append(step)
                    pending.remove(step)
                    progress = True
                else:
                    failures.append(f"{step.label}: {reason}")
            if not progress:
                return done, failures[0]
        return done, None

    def changed_files(self) -> list[str]:
        """Files that now differ from the original (created ones included)."""
        changed = []
        for relative in sorted(self.saved | self.created):
            now, before = self.tree / relative, self.originals / relative
            if relative in self.created:
                if now.exists():
                    changed.append(relative)
            elif not now.exists() or now.read_bytes() != before.read_bytes():
                changed.append(relative)
        return changed

    def contents(self) -> dict[str, bytes | None]:
        """The files that differ from the original, with what they hold now (None: removed)."""
        return {
            relative: path.read_bytes() if path.exists() else None
            for relative in self.changed_files()
            for path in [self.tree / relative]
        }

    def _save(self, relative: str) -> None:
        if relative in self.saved or relative in self.created:
            return
        path = self.tree / relative
        if not path.resolve().is_relative_to(self.tree.resolve()):
            return  # patch refuses paths out of the tree itself; nothing of ours to save
        if path.is_file():
            copy = self.originals / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
            self.saved.add(relative)
        elif not path.exists():
            self.created.add(relative)

    def _patch(self, argv: list[str]) -> str | None:
        done = subprocess.run(argv, cwd=self.tree, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return None
        lines = (done.stdout + done.stderr).strip().splitlines()
        detail = [
            line for line in lines if "FAILED" in line or "can't" in line or "No file" in line
        ]
        return "; ".join(detail[:2]) or (lines[-1] if lines else "patch failed")
