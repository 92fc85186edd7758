"""Property: whatever a feed document is changed into, reading it gives a batch or a FeedError.

Nothing else escapes (no KeyError, TypeError, AttributeError...), so a broken
feed is always a one-line refusal. Values anywhere in real-format documents
are replaced by arbitrary JSON, keys deleted, bytes of the text changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nonstop.cve.batch import FeedBatch
from nonstop.cve.errors import FeedError
from nonstop.cve.feeds import parse_feed

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cve"
TRACKER = json.loads((FIXTURES / "tracker.json").read_text())
OSV = [json.loads(path.read_text()) for path in sorted((FIXTURES / "osv").glob("*.json"))]

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["0", "1:2.0-1", "resolved", "open", "CVE-2024-0001", "Debian:12"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in NODE: dict keys and list indexes, at every depth."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


@st.composite
def changed(draw: Any, document: Any) -> bytes:
    copy = json.loads(json.dumps(document))
    path = draw(st.sampled_from(paths(copy)))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(copy).encode()


@st.composite
def bytes_changed(draw: Any, document: Any) -> bytes:
    data = json.dumps(document).encode()
    position = draw(st.integers(0, len(data) - 1))
    chunk = draw(st.binary(min_size=0, max_size=4))
    return data[:position] + chunk + data[position + draw(st.integers(0, 4)) :]


def read(data: bytes) -> None:
    try:
        assert isinstance(parse_feed(data, "fuzz"), FeedBatch)
    except FeedError as refused:
        assert "\n" not in str(refused)


@settings(max_examples=600, deadline=None, database=None)
@given(st.one_of(changed(TRACKER), bytes_changed(TRACKER)))
def test_changed_tracker_documents(data: bytes) -> None:
    read(data)


@settings(max_examples=600, deadline=None, database=None)
@given(st.one_of(changed(OSV), bytes_changed(OSV)))
def test_changed_osv_documents(data: bytes) -> None:
    read(data)
