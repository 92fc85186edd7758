"""The one error of the feeds: a feed refused whole, said in one line.

``FeedError("fixed_version '2.5 .0' is not a Debian version", feed="tracker JSON",
where="expat/CVE-2024-50602/bookworm")`` reads ``tracker JSON:
expat/CVE-2024-50602/bookworm: fixed_version '2.5 .0' is not a Debian version``.
A reader raises it before returning anything, so a caller never holds half a feed.
"""

from __future__ import annotations

MAX_SHOWN = 80
"""Feed text quoted in an error is cut here: the line stays one line of reasonable length."""


class FeedError(ValueError):
    """A feed, a feed file or a feed download refused: what, where, and what is wrong."""

    def __init__(self, problem: str, *, feed: str = "", where: str = "") -> None:
        self.problem = problem
        self.feed = feed
        self.where = where
        super().__init__(": ".join(part for part in (feed, where, problem) if part))


def shown(value: object) -> str:
    """VALUE as an error quotes it: repr form (control characters escaped), cut at MAX_SHOWN."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def place(*parts: object) -> str:
    """Where in a document, as ``expat/CVE-2024-50602/bookworm``; odd parts quoted by ``shown``."""
    return "/".join(
        part
        if isinstance(part, str) and part.isascii() and part.isprintable() and len(part) <= 80
        else shown(part)
        for part in parts
    )


class Malformed(ValueError):
    """What is wrong with one entry, raised where the reader does not know the place yet:
    its caller turns it into the FeedError that says where (readers of big documents build
    the place only when something is wrong)."""
