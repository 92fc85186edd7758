"""Finding sources again from the paths debug information recorded."""

from __future__ import annotations

from pathlib import Path

from nonstop.builders.userspace.driver import BuiltTree


def test_prefix_mapped_path_of_a_build_subdirectory(tmp_path: Path) -> None:
    # Debian's expat: compiled in TREE/build/lib from ../../src/lib/xmlparse.c with
    # -ffile-prefix-map=TREE/build=. (dpkg-buildflags), the tree moved afterwards.
    source = tmp_path / "moved" / "src" / "lib" / "xmlparse.c"
    source.parent.mkdir(parents=True)
    source.write_text("int x;\n")
    tree = BuiltTree(
        stage="original",
        root=tmp_path / "moved",
        library=tmp_path / "moved" / "lib.so",
        objects={},
        seconds=0.0,
        built_at=Path("/build/tree"),
        prefix_maps=(("/build/tree/build", "."),),
    )
    assert tree.source_path("./lib/../../src/lib/xmlparse.c") == source
    assert tree.source_path("/build/tree/src/lib/xmlparse.c") == source
    assert tree.source_path("src/lib/xmlparse.c") == source
