"""Does the original build reproduce the target binary? Compared by GNU build-id.

The bundle is for one exact file. Only when the recipe's build of the
unmodified source gives that file (same build-id) do the symbol map and the
object comparison describe what runs; otherwise the build is refused, unless
the recipe declares the build itself to be the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nonstop.builders.errors import BuilderError
from nonstop.builders.userspace.recipe import Recipe
from nonstop.bundle import UserspaceTarget
from nonstop.bundle.identity import IdentityError, userspace_target_of


@dataclass(frozen=True)
class Reproduction:
    """The reproduction verdict; check_reproduction returns only one that matches.

    TARGET is the identity the bundles name, read from TARGET_PATH: the
    recipe's binary, or the built library itself when the build is the target.
    """

    built_build_id: str
    target: UserspaceTarget
    target_path: Path
    build_is_target: bool

    @property
    def matches(self) -> bool:
        return self.built_build_id == self.target.build_id

    def describe(self) -> str:
        if self.build_is_target:
            return f"the build is the target (build-id {self.built_build_id})"
        verdict = "matches" if self.matches else "DOES NOT match"
        return (
            f"original build (build-id {self.built_build_id}) {verdict} the target "
            f"{self.target_path} (build-id {self.target.build_id})"
        )


def check_reproduction(recipe: Recipe, built_library: Path) -> Reproduction:
    """Compare the reproduction build with the target; raise BuilderError on a mismatch."""
    try:
        built = userspace_target_of(built_library, with_package=False)
        if recipe.target.build_is_target:
            target, path = built, built_library
        else:
            assert recipe.target.binary is not None
            path = recipe.target.binary
            target = userspace_target_of(path)
    except IdentityError as exc:
        raise BuilderError(str(exc)) from None
    reproduction = Reproduction(
        built_build_id=built.build_id,
        target=target,
        target_path=path,
        build_is_target=recipe.target.build_is_target,
    )
    if not reproduction.matches:
        raise BuilderError(
            f"{reproduction.describe()}: the recipe's build does not reproduce the binary the "
            "bundle is for (check compiler, flags, source version and build path, or declare "
            "build_is_target = true)"
        )
    return reproduction
