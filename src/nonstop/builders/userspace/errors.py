"""Why a build stopped: one exception type, one line naming the cause."""

from __future__ import annotations


class BuildError(Exception):
    """The builder cannot go on. The message is one line naming the cause."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class RecipeError(BuildError):
    """The recipe file is missing, not TOML, or does not describe a build."""
