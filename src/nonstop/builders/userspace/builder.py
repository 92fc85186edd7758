"""`nonstop build userspace`: a recipe in, one signed cumulative bundle per level out.

Stages: reproduce the target (plain build, build-id compared, symbol map taken
from the unstripped result), build the original with function sections, then
for each level N build the source with fixes 1..N applied, compare it with the
original, refuse what is unsafe, assemble the patch object and sign the bundle.
Level N replaces level N-1 on the host, so each bundle stands alone.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from nonstop import __version__
from nonstop.builders.errors import BuilderError
from nonstop.builders.userspace.analysis import LevelAnalysis, Refusal, analyze_level
from nonstop.builders.userspace.driver import BuildDriver, BuiltTree
from nonstop.builders.userspace.patchobj import PatchObject, assemble
from nonstop.builders.userspace.recipe import FixSpec, Recipe
from nonstop.builders.userspace.reproduce import Reproduction, check_reproduction
from nonstop.builders.userspace.targetsyms import TargetSymbols
from nonstop.bundle import (
    Fix,
    FunctionPatch,
    Manifest,
    SigningKey,
    Update,
    UserspaceTarget,
    describe_payload,
    pack,
)
from nonstop.bundle.errors import BundleError
from nonstop.bundle.symbols import (
    SymbolMap,
    replacement_refusal,
    symbol_map_of,
    target_functions,
)

BUILDER = f"nonstop build userspace {__version__}"
OBJECT_NAME = "patch.o"
SYMBOLS_NAME = "symbols.json"
SOURCE_NAME = "fixes.patch"


@dataclass
class LevelResult:
    """One level's outcome: built (BUNDLE written), refused, or skipped (NOTE says why).

    SECONDS covers analysis, assembly and signing, not the compilation.
    """

    level: int
    fixes: tuple[FixSpec, ...]
    status: str
    """built, refused or skipped."""
    analysis: LevelAnalysis | None = None
    patch: PatchObject | None = None
    bundle: Path | None = None
    bundle_bytes: int = 0
    note: str = ""
    seconds: float = 0.0

    @property
    def refusals(self) -> list[Refusal]:
        """Why the level was refused; empty for a built or skipped level."""
        return self.analysis.refusals if self.analysis else []


@dataclass
class BuildResult:
    """What build_userspace did: one LevelResult per fix, in order; STAGES in seconds."""

    recipe: Recipe
    reproduction: Reproduction
    levels: list[LevelResult] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    target_copy: Path | None = None
    """When the build is the target: the exact library to deploy."""

    @property
    def ok(self) -> bool:
        """True only if every level was built (``nonstop build userspace`` exits 1 otherwise)."""
        return all(level.status == "built" for level in self.levels)


def check_targets(
    library: Path, functions: list[FunctionPatch], symbols: SymbolMap
) -> tuple[list[FunctionPatch], list[Refusal]]:
    """FUNCTIONS as the target LIBRARY has them: refused as the engine would refuse them, the
    others with the SHA-256 of their original code (the engine checks it in each process)."""
    found = target_functions(library, [f.target for f in functions], symbols)
    checked, refusals = [], []
    for function in functions:
        known = found.get(function.target)
        reason = replacement_refusal(function.target, known.type) if known else None
        if reason is not None:
            refusals.append(Refusal(function.target, reason))
        code = known.code_sha256 if known else None
        checked.append(replace(function, original_sha256=code))
    return checked, refusals


def bundle_name(recipe: Recipe, level: int) -> str:
    """The file name of level LEVEL's bundle in the output dir; a rebuild overwrites it."""
    return f"{recipe.name}-level{level}.nsb"


def build_userspace(
    recipe: Recipe, key: SigningKey, outdir: Path, work: Path | None = None
) -> BuildResult:
    """Build every level of RECIPE into OUTDIR; a refused level stops the levels above it."""
    outdir.mkdir(parents=True, exist_ok=True)
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        return _Builder(recipe, key, outdir, work).run()
    with tempfile.TemporaryDirectory(prefix="nonstop-build-") as temporary:
        return _Builder(recipe, key, outdir, Path(temporary)).run()


class _Builder:
    def __init__(self, recipe: Recipe, key: SigningKey, outdir: Path, work: Path) -> None:
        self.recipe, self.key, self.outdir = recipe, key, outdir
        self.driver = BuildDriver(recipe, work)
        self.work = work
        self.stages: dict[str, float] = {}

    def _timed_build(self, stage: str, fixes: tuple[FixSpec, ...], sections: bool) -> BuiltTree:
        tree = self.driver.build(stage, fixes, function_sections=sections)
        self.stages[f"build {stage}"] = round(tree.seconds, 3)
        return tree

    def run(self) -> BuildResult:
        reproduced = self._timed_build("reproduce", (), False)
        reproduction = check_reproduction(self.recipe, reproduced.library)
        try:
            symbols = symbol_map_of(reproduced.library)
        except BundleError as exc:
            raise BuilderError(
                f"the original build's library has no symbols to ship: {exc}"
            ) from None
        result = BuildResult(recipe=self.recipe, reproduction=reproduction, stages=self.stages)
        self.target_library = self.work / "target-library"
        shutil.copyfile(reproduced.library, self.target_library)  # the target's code, per level
        if self.recipe.target.build_is_target:
            result.target_copy = self._keep_target(reproduced.library)
            result.reproduction = replace(reproduction, target_path=result.target_copy)
        shutil.rmtree(reproduced.root)
        original = self._timed_build("original", (), True)
        targets = TargetSymbols(symbols, self.target_library)
        refused_at: int | None = None
        for fix in self.recipe.fixes:
            level = fix.number
            fixes = self.recipe.fixes[:level]
            if refused_at is not None:
                result.levels.append(
                    LevelResult(level, fixes, "skipped", note=f"includes fix {refused_at}, refused")
                )
                continue
            outcome = self._level(level, fixes, original, targets, reproduction, symbols)
            result.levels.append(outcome)
            if outcome.status != "built":
                refused_at = level
        return result

    def _keep_target(self, library: Path) -> Path:
        directory = self.outdir / "target"
        directory.mkdir(exist_ok=True)
        copy = directory / Path(self.recipe.build.library).name
        shutil.copy2(library, copy)
        return copy

    def _level(
        self,
        level: int,
        fixes: tuple[FixSpec, ...],
        original: BuiltTree,
        targets: TargetSymbols,
        reproduction: Reproduction,
        symbols: SymbolMap,
    ) -> LevelResult:
        patched = self._timed_build(f"level{level}", fixes, True)
        started = time.monotonic()
        analysis = analyze_level(original, patched, targets)
        patch = assemble(analysis, targets)
        patch.functions, refused = check_targets(self.target_library, patch.functions, symbols)
        analysis.refusals.extend(refused)
        if not patch.functions and not analysis.refusals:
            analysis.refusals.append(
                Refusal(
                    Path(self.recipe.build.library).name,
                    "the fixes change no function of the library: nothing to patch",
                )
            )
        outcome = LevelResult(level, fixes, "built", analysis=analysis)
        if analysis.refusals:
            outcome.status = "refused"
        else:
            outcome.patch = patch
            data = self._bundle(level, fixes, patch, reproduction, symbols)
            outcome.bundle = self.outdir / bundle_name(self.recipe, level)
            outcome.bundle.write_bytes(data)
            outcome.bundle_bytes = len(data)
        outcome.seconds = round(time.monotonic() - started, 3)
        self.stages[f"analyse level{level}"] = outcome.seconds
        shutil.rmtree(patched.root)
        return outcome

    def _bundle(
        self,
        level: int,
        fixes: tuple[FixSpec, ...],
        patch: PatchObject,
        reproduction: Reproduction,
        symbols: SymbolMap,
    ) -> bytes:
        target = reproduction.target
        base = self.recipe.effective_version or (
            target.package.version if target.package else target.soname
        )
        return sign_level(
            LevelContent(
                target=target,
                level=level,
                patch=patch,
                symbols=symbols,
                fixes=tuple(
                    Fix(title=fix.title, cves=fix.cves, references=fix.references) for fix in fixes
                ),
                source=b"".join(fix.patch.read_bytes() for fix in fixes),
                effective_version=f"{base}+nonstop{level}",
                description=f"built from recipe {self.recipe.name}, fixes 1..{level}",
            ),
            self.key,
        )


@dataclass(frozen=True)
class LevelContent:
    """Everything one userspace level's bundle says; SOURCE is the fixes' patch text."""

    target: UserspaceTarget
    level: int
    patch: PatchObject
    symbols: SymbolMap
    fixes: tuple[Fix, ...]
    source: bytes
    effective_version: str
    description: str
    update: Update | None = None
    builder: str = BUILDER


def sign_level(content: LevelContent, key: SigningKey) -> bytes:
    """The signed bundle of one level: patch object, symbol map linked to it, and the source."""
    linked = SymbolMap(
        build_id=content.target.build_id,
        symbols=content.symbols.symbols,
        links=content.patch.links,
    )
    files = {
        OBJECT_NAME: (content.patch.data, "object"),
        SYMBOLS_NAME: (linked.to_json_bytes(), "symbols"),
        SOURCE_NAME: (content.source, "source"),
    }
    manifest = Manifest(
        kind="userspace",
        target=content.target,
        level=content.level,
        functions=tuple(content.patch.functions),
        payload=tuple(
            describe_payload(name, role, data)  # type: ignore[arg-type]
            for name, (data, role) in sorted(files.items())
        ),
        effective_version=content.effective_version,
        builder=content.builder,
        fixes=content.fixes,
        update=content.update,
        description=content.description,
    )
    return pack(manifest, {name: data for name, (data, _) in files.items()}, key)
