"""Per-CVE cumulative levels of a Debian update, built incrementally on the original tree.

For each CVE of the plan, in plan order: its patch steps go onto the tree on
top of those of the CVEs already built (``applying``); the objects of each
shipped library whose compilation reads a changed file are compiled again,
before and after (``replay``); the userspace builder's analysis compares
them and refuses what cannot be applied live; each library the CVE changes
gets its next level, signed, holding every fix of its earlier levels; the
smoke test loads it into a real process. A CVE that cannot be built is
refused with its reasons and left out of later levels; one whose patches
touch no library code is not applicable. Nothing here rebuilds the package.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nonstop import __version__
from nonstop.builders.debian.applying import PatchedTree, Step, steps_for
from nonstop.builders.debian.changes import CvePlan, Plan
from nonstop.builders.debian.original import DIRTY, BuiltLibrary, OriginalBuild, real_compiler
from nonstop.builders.debian.patches import file_kind, read_series
from nonstop.builders.debian.replay import ObjectSource, Replayer, library_objects
from nonstop.builders.debian.smoke import smoke_test
from nonstop.builders.errors import BuilderError
from nonstop.builders.userspace.analysis import analyze_level
from nonstop.builders.userspace.builder import LevelContent, check_targets, sign_level
from nonstop.builders.userspace.compilelog import prefix_maps
from nonstop.builders.userspace.driver import BuiltTree
from nonstop.builders.userspace.patchobj import PatchObject, assemble
from nonstop.builders.userspace.targetsyms import TargetSymbols
from nonstop.bundle import Fix, SigningKey, Update
from nonstop.bundle.errors import BundleError
from nonstop.bundle.symbols import SymbolMap, symbol_map_of

BUILDER = f"nonstop build debian {__version__}"
DEPS = "deps.json"

Progress = Callable[[str], None]


@dataclass
class LibraryLevel:
    """What one CVE gave one library: its level, the functions it replaces, the bundle."""

    soname: str
    build_id: str
    level: int
    functions: list[str]
    bundle: Path
    bundle_bytes: int


@dataclass
class CveOutcome:
    """One CVE's result: built, refused or not-applicable, and why."""

    cve: str
    status: str
    reasons: list[str] = field(default_factory=list)
    patches: list[str] = field(default_factory=list)
    levels: list[LibraryLevel] = field(default_factory=list)
    build_seconds: float = 0.0
    analysis_seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "cve": self.cve,
            "status": self.status,
            "reasons": self.reasons,
            "patches": self.patches,
            "levels": [{**vars(level), "bundle": str(level.bundle)} for level in self.levels],
            "build_seconds": self.build_seconds,
            "analysis_seconds": self.analysis_seconds,
        }


@dataclass(eq=False)
class _Series:
    """One shipped library's levels so far."""

    built: BuiltLibrary
    objects: dict[str, ObjectSource]
    deps: dict[str, set[str]]
    symbols: SymbolMap
    targets: TargetSymbols
    level: int = 0
    fixes: list[tuple[Fix, bytes]] = field(default_factory=list)
    last_patch: bytes = b""
    """The patch object of the current level."""
    changed_objects: set[str] = field(default_factory=set)

    @property
    def soname(self) -> str:
        return self.built.shipped.soname


@dataclass
class _Trial:
    """One library's analysed level for the CVE being tried."""

    series: _Series
    patch: PatchObject
    objects: set[str]


class LevelBuilder:
    """Builds PLAN's CVEs into OUTDIR on ORIGINAL's tree (module docstring)."""

    def __init__(
        self,
        plan: Plan,
        original: OriginalBuild,
        key: SigningKey,
        outdir: Path,
        work: Path,
        progress: Progress | None = None,
    ) -> None:
        self.plan, self.original, self.key = plan, original, key
        self.outdir, self.work = outdir, work
        self.say = progress or (lambda _line: None)
        self.accepted: list[Step] = []
        """The patch steps of the CVEs built so far, in the order they apply."""
        self.outcomes: list[CveOutcome] = []
        self.undeclared: dict[Path, set[str]] = {}
        """Per patched object: the functions its compilation called without a declaration."""
        self.positions = {
            entry.name: index
            for index, entry in enumerate(read_series(plan.new.tree / "debian" / "patches"))
        }
        self.built_patches: dict[str, str] = {}
        """Patch name -> the CVE whose level carries it."""
        self.prefix_maps = prefix_maps(original.calls)
        self.inert: set[Path] = set()
        """Patched objects whose analysis found no change: left out of later analyses."""

    def run(self) -> list[CveOutcome]:
        """Every CVE of the plan tried in order; the tree is the original again afterwards."""
        self.outdir.mkdir(parents=True, exist_ok=True)
        with self.original.checked_out() as tree:
            self.replayer = Replayer(real_compiler(), tree)
            self.series = [self._series(built, tree) for built in self.original.libraries]
            compiled = frozenset(
                path for series in self.series for files in series.deps.values() for path in files
            )
            self.tree = PatchedTree(tree, self.work / "original-sources", compiled)
            (tree / DIRTY).write_text("levels are changing this tree\n")
            try:
                for cve in self.plan.cves:
                    self.outcomes.append(self._contained(cve))
            finally:
                self.tree.reset()  # the tree is the original again: keep it, whatever failed
                (tree / DIRTY).unlink()
        return self.outcomes

    # -- set-up -----------------------------------------------------------------------

    def _series(self, built: BuiltLibrary, tree: Path) -> _Series:
        objects = library_objects(built.link, self.original.calls, tree)
        deps = self._dependencies(built, objects)
        try:
            symbols = symbol_map_of(tree / built.unstripped)
        except BundleError as exc:
            raise BuilderError(f"{built.shipped.soname}: no symbols to ship: {exc}") from None
        return _Series(
            built,
            {item.key: item for item in objects},
            deps,
            symbols,
            TargetSymbols(symbols, built.shipped.path),
        )

    def _dependencies(
        self, built: BuiltLibrary, objects: list[ObjectSource]
    ) -> dict[str, set[str]]:
        """Files each object's compilation reads, computed once per original build."""
        cache = self.original.home / f"{built.shipped.build_id}.{DEPS}"
        try:
            stored = json.loads(cache.read_text())
            if set(stored) == {item.key for item in objects}:
                return {key: set(files) for key, files in stored.items()}
        except (OSError, ValueError):
            pass
        self.say(
            f"{built.shipped.soname}: reading which files each of {len(objects)} objects includes"
        )
        deps = self.replayer.dependencies(objects, self.work / "deps")
        cache.write_text(json.dumps({key: sorted(files) for key, files in deps.items()}))
        return deps

    # -- one CVE ---------------------------------------------------------------------

    def _contained(self, cve: CvePlan) -> CveOutcome:
        """CVE's outcome; a step that fails for it (a compiler or a reader giving up on one of
        its objects) refuses it with that error instead of ending the run: the next CVE starts
        from the original tree again."""
        try:
            return self._try(cve)
        except BuilderError as exc:
            patches = [change.name for change in cve.patches]
            return CveOutcome(cve.cve, "refused", [f"its build failed: {exc}"], patches)

    def _try(self, cve: CvePlan) -> CveOutcome:
        outcome = CveOutcome(cve.cve, "refused", patches=[p.name for p in cve.patches])
        if not cve.patches:
            outcome.reasons.append("no added or changed patch of the update names it")
            return outcome
        if not cve.library_code:
            kinds = sorted({file_kind(path) for path in cve.files})
            outcome.status = "not-applicable"
            outcome.reasons.append(
                f"its patches change no library source, only {', '.join(kinds)} files"
            )
            return outcome
        new = [change for change in cve.patches if change.name not in self.built_patches]
        if not new:
            carriers = sorted({self.built_patches[p.name] for p in cve.patches})
            outcome.status = "built"
            outcome.reasons.append(f"its patches are in the levels of {', '.join(carriers)}")
            return outcome
        self.say(f"{cve.cve}: applying {', '.join(change.name for change in new)}")
        started = time.monotonic()
        self.tree.reset()
        self._reapply(self.accepted)
        built_before = self.tree.contents()
        steps = [
            step
            for change in new
            for step in steps_for(
                change,
                self.plan.old.tree / "debian" / "patches",
                self.plan.new.tree / "debian" / "patches",
            )
        ]
        order, failure = self.tree.apply_in_some_order(steps)
        applied = [*self.accepted, *order]
        if failure is not None:
            # Debian applies its series in order: a patch older in it than those built already
            # (a changed one they were made on top of) may need to go under them.
            self.tree.reset()
            in_series = sorted([*self.accepted, *steps], key=self._series_position)
            applied, second = self.tree.apply_in_some_order(in_series)
            if second is not None:
                outcome.reasons.append(
                    f"does not apply to the {self.plan.old.version} tree: {failure}"
                    + self._refused_before()
                )
                return outcome
        changed = set(self.tree.changed_files())
        if self.tree.contents() == built_before:
            outcome.status = "not-applicable"
            outcome.reasons.append(
                "applied, its patches change no file beyond the CVEs built before it (a changed "
                "patch whose new version has the same effect as the old)"
            )
            return outcome
        reached = self._reached(changed)
        if any(reached.values()):
            self.tree.reset()  # the original objects are compiled from the original tree
            for series, keys in reached.items():
                self._original_objects(series, keys | series.changed_objects)
            self._reapply(applied)
        trials = self._compile_and_analyse(cve.cve, reached, changed, outcome)
        outcome.build_seconds = round(time.monotonic() - started - outcome.analysis_seconds, 1)
        if outcome.reasons:
            return outcome
        if not trials:
            sources = sorted(path for path in changed if file_kind(path) == "source")
            outcome.status = "not-applicable"
            outcome.reasons.append(
                "its changes compile to the code the shipped libraries run already (originally "
                "or at their current level)"
                if any(reached.values())
                else f"its changes ({', '.join(sources) or 'no source file'}) reach no code of "
                f"the shipped libraries ({', '.join(s.soname for s in self.series)})"
            )
            return outcome
        self._release(cve, trials, outcome)
        if outcome.status == "built":
            self.accepted = applied
            self.built_patches.update({change.name: cve.cve for change in new})
        return outcome

    def _series_position(self, step: Step) -> tuple[int, bool]:
        """Where STEP's patch is in the new series (taking an old version off comes first)."""
        return self.positions.get(step.name, len(self.positions)), not step.reverse

    def _refused_before(self) -> str:
        """A note naming the CVEs refused so far, whose patches the tree lacks."""
        refused = [outcome.cve for outcome in self.outcomes if outcome.status == "refused"]
        if not refused:
            return ""
        return f" (refused before it, so not in this tree: the patches of {', '.join(refused)})"

    def _reapply(self, steps: list[Step]) -> None:
        for step in steps:
            reason = self.tree.apply(step)
            if reason is not None:
                raise BuilderError(f"{step.label} applied before and not now: {reason}")

    def _reached(self, changed: set[str]) -> dict[_Series, set[str]]:
        """Per library: the objects whose compilation reads a CHANGED file."""
        return {
            series: {key for key, files in series.deps.items() if files & changed}
            for series in self.series
        }

    def _compile_and_analyse(
        self, cve: str, reached: dict[_Series, set[str]], changed: set[str], outcome: CveOutcome
    ) -> list[_Trial]:
        trials = []
        for series, keys in reached.items():
            if not keys:
                continue
            objects = keys | series.changed_objects
            before = self._original_objects(series, objects)
            after = self._patched_objects(cve, series, objects, changed)
            # A unit whose patched object an earlier level found unchanged is unchanged again.
            objects = {key for key in objects if after[key] not in self.inert}
            before = {key: before[key] for key in objects}
            after = {key: after[key] for key in objects}
            missing = self._undeclared(series, after.values(), changed)
            if missing:
                outcome.reasons.append(
                    f"{series.soname}: the patched code calls {', '.join(missing)}, which "
                    "nothing in this tree declares or defines" + self._refused_before()
                )
                continue
            started = time.monotonic()
            trial = self._analyse(series, before, after, objects, outcome)
            outcome.analysis_seconds = round(
                outcome.analysis_seconds + time.monotonic() - started, 1
            )
            if trial is not None:
                trials.append(trial)
        return trials

    def _undeclared(self, series: _Series, objects: Iterable[Path], changed: set[str]) -> list[str]:
        """Functions the patched OBJECTS call without a declaration that are not in the target
        and that the original text of the CHANGED files does not name: a patch of another CVE
        brings them (gcc 12 compiles such a call, to a symbol no process has)."""
        names = set().union(*(self.undeclared.get(path, set()) for path in objects))
        names -= {symbol.name for symbol in series.symbols.symbols}
        if names:
            original = b"".join(
                (self.tree.originals / path).read_bytes()
                for path in changed
                if (self.tree.originals / path).is_file()
            )
            names = {name for name in names if name.encode() not in original}
        return sorted(names)

    def _original_objects(self, series: _Series, keys: set[str]) -> dict[str, Path]:
        """The original build's objects with sections, compiled once per original build."""
        into = self.original.home / "objects" / series.built.shipped.build_id
        missing = [
            series.objects[key]
            for key in sorted(keys)
            if not (into / series.objects[key].file_name).is_file()
        ]
        if missing:
            staged = into.parent / f".{into.name}-new"
            shutil.rmtree(staged, ignore_errors=True)
            for key, path in self.replayer.compile(missing, staged).items():
                into.mkdir(parents=True, exist_ok=True)
                path.rename(into / series.objects[key].file_name)
            shutil.rmtree(staged, ignore_errors=True)
        return {key: into / series.objects[key].file_name for key in keys}

    def _patched_objects(
        self, cve: str, series: _Series, keys: set[str], changed: set[str]
    ) -> dict[str, Path]:
        """KEYS compiled from the tree as it is now; an object whose changed inputs read the
        same as for an earlier level is that level's object, not compiled again."""
        store = self.work / "patched"
        store.mkdir(parents=True, exist_ok=True)
        found, missing = {}, []
        for key in sorted(keys):
            inputs = sorted(series.deps[key] & changed)
            state = hashlib.sha256(key.encode())
            for relative in inputs:
                path = self.tree.tree / relative
                state.update(f"\0{relative}\0".encode())
                state.update(path.read_bytes() if path.exists() else b"(removed)")
            found[key] = store / f"{state.hexdigest()}.o"
            if not found[key].is_file():
                missing.append(key)
        self.say(f"{cve}: {series.soname}: {len(keys)} objects reached, {len(missing)} to compile")
        compiled = self.replayer.compile(
            [series.objects[key] for key in missing], self.work / "compiling"
        )
        for key, path in compiled.items():
            path.rename(found[key])
            self.undeclared[found[key]] = self.replayer.implicit.pop(path, set())
        return found

    def _analyse(
        self,
        series: _Series,
        before: dict[str, Path],
        after: dict[str, Path],
        objects: set[str],
        outcome: CveOutcome,
    ) -> _Trial | None:
        tree = self.tree.tree
        library = tree / series.built.unstripped
        original = BuiltTree(
            "original", self.tree.originals, library, before, 0.0, tree, self.prefix_maps, tree
        )
        patched = BuiltTree("patched", tree, library, after, 0.0, tree, self.prefix_maps)
        analysis = analyze_level(original, patched, series.targets)
        patch = assemble(analysis, series.targets)
        patch.functions, refused = check_targets(
            series.built.shipped.path, patch.functions, series.symbols
        )
        analysis.refusals.extend(refused)
        if analysis.refusals:
            outcome.reasons += [f"{series.soname}: {refusal}" for refusal in analysis.refusals]
            return None
        changed = {plan.diff.unit for plan in analysis.units}
        self.inert.update(after[key] for key in objects - changed)
        if not patch.functions or patch.data == series.last_patch:
            return None  # the change compiles to the same code for this library
        return _Trial(series, patch, changed)

    # -- signing and the smoke test ---------------------------------------------------

    def _release(self, cve: CvePlan, trials: list[_Trial], outcome: CveOutcome) -> None:
        source = b"".join(
            (self.plan.new.tree / "debian" / "patches" / change.name).read_bytes()
            for change in cve.patches
        )
        versions = ", ".join(entry.version for entry in cve.entries) or self.plan.new.version
        fix = Fix(
            title=f"{cve.cve} (Debian {versions})",
            cves=(cve.cve,),
            references=tuple(f"debian/patches/{change.name}" for change in cve.patches),
        )
        written = []
        for trial in trials:
            series = trial.series
            level = series.level + 1
            fixes = [*series.fixes, (fix, source)]
            data = sign_level(
                LevelContent(
                    target=series.built.shipped.target,
                    level=level,
                    patch=trial.patch,
                    symbols=series.symbols,
                    fixes=tuple(item for item, _ in fixes),
                    source=b"".join(text for _, text in fixes),
                    effective_version=f"{self.plan.old.version}+nonstop{level}",
                    description=(
                        f"{self.plan.package} {self.plan.old.version} -> "
                        f"{self.plan.new.version}: level {level} of {series.soname}"
                    ),
                    update=Update(self.plan.package, self.plan.old.version, self.plan.new.version),
                    builder=BUILDER,
                ),
                self.key,
            )
            bundle = self.outdir / f"{series.soname}-level{level}.nsb"
            bundle.write_bytes(data)
            written.append(bundle)
            self.say(f"{cve.cve}: {series.soname} level {level}: smoke test in a live process")
            failure = smoke_test(series.built.shipped.path, bundle, self.key.public())
            if failure is not None:
                for path in written:
                    path.unlink()
                outcome.reasons.append(f"{series.soname}: smoke test: {failure}")
                outcome.levels.clear()
                return
            outcome.levels.append(
                LibraryLevel(
                    series.soname,
                    series.built.shipped.build_id,
                    level,
                    [function.target for function in trial.patch.functions],
                    bundle,
                    len(data),
                )
            )
        for trial in trials:
            trial.series.level += 1
            trial.series.fixes.append((fix, source))
            trial.series.last_patch = trial.patch.data
            trial.series.changed_objects |= trial.objects
        outcome.status = "built"
