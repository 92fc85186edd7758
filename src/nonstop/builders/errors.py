"""The builders' error root, shared by every builder so that callers catch one type."""

from __future__ import annotations


class BuilderError(Exception):
    """A build cannot go on. The message is one line naming the cause."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class RecipeError(BuilderError):
    """A recipe file is missing, not TOML, or does not describe a build."""
