"""Each libvuln fixture fix through the whole builder: what the patch object holds, or why not.

The patch objects are read back with pyelftools (not the builder's own reader),
so these tests check the builder's output, not its opinion of it.
"""

from __future__ import annotations

from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_RELOC_TYPE_x64
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from tests.builders.userspace.conftest import BuildFixes

RELOC_NAMES = {value: name for name, value in ENUM_RELOC_TYPE_x64.items()}


def symbol_table(elf: ELFFile) -> dict[str, dict[str, object]]:
    table = elf.get_section_by_name(".symtab")
    assert isinstance(table, SymbolTableSection)
    found = {}
    for symbol in table.iter_symbols():
        if symbol.name:
            shndx = symbol["st_shndx"]
            found[symbol.name] = {
                "type": symbol["st_info"]["type"],
                "bind": symbol["st_info"]["bind"],
                "size": symbol["st_size"],
                "section": elf.get_section(shndx).name if isinstance(shndx, int) else shndx,
            }
    return found


def relocations(elf: ELFFile, section_name: str) -> list[tuple[str, str, int]]:
    """(type, what it points at, addend) for SECTION_NAME; sections as 'section:NAME'."""
    table = elf.get_section_by_name(".symtab")
    assert isinstance(table, SymbolTableSection)
    found = []
    for section in elf.iter_sections():
        if not isinstance(section, RelocationSection):
            continue
        if elf.get_section(section["sh_info"]).name != section_name:
            continue
        for reloc in section.iter_relocations():
            symbol = table.get_symbol(reloc["r_info_sym"])
            if symbol["st_info"]["type"] == "STT_SECTION":
                what = "section:" + elf.get_section(symbol["st_shndx"]).name
            else:
                what = symbol.name
            found.append((RELOC_NAMES[reloc["r_info_type"]], what, reloc["r_addend"]))
    return found


def replaced(built, level: int = 1) -> dict[str, str | None]:
    return {f.target: f.replacement for f in built.bundle(level).manifest.functions}


def test_bounds_check_fix_replaces_exactly_the_changed_function(build_fixes: BuildFixes) -> None:
    built = build_fixes("bounds")
    level = built.level(1)
    assert level.status == "built"
    assert replaced(built) == {"vuln_get": "vuln_get.patched"}
    assert level.analysis.changed == ["vuln_get"]
    # The fix added a line above vuln_checked: only its assert's line number moved.
    assert "vuln_checked" in level.analysis.line_only
    symbols = symbol_table(built.patch_object(1))
    assert symbols["vuln_get.patched"]["type"] == "STT_FUNC"
    assert symbols["vuln_get.patched"]["bind"] == "STB_GLOBAL"
    assert not any(name.startswith("vuln_checked") for name in symbols)
    text = built.patch_object(1).get_section_by_name(".text.vuln_get")
    assert text is not None
    code = text.data()
    assert code.startswith(bytes.fromhex("f30f1efa")), "new code must start with endbr64"


def test_new_static_helper_travels_in_the_patch(build_fixes: BuildFixes) -> None:
    built = build_fixes("helper")
    analysis = built.level(1).analysis
    assert analysis.added == ["clamp_len"] and analysis.changed == ["vuln_checksum"]
    assert replaced(built) == {"vuln_checksum": "vuln_checksum.patched"}
    elf = built.patch_object(1)
    symbols = symbol_table(elf)
    assert symbols["clamp_len"]["type"] == "STT_FUNC"
    assert symbols["clamp_len"]["bind"] == "STB_LOCAL"
    calls = relocations(elf, ".text.vuln_checksum")
    assert ("R_X86_64_PC32", "section:.text.clamp_len", -4) in calls  # gas: local call


def test_fix_in_inline_function_patches_both_callers(build_fixes: BuildFixes) -> None:
    built = build_fixes("inline")
    analysis = built.level(1).analysis
    assert sorted(analysis.inlined) == [
        ("vuln_offset", ["in_range"]),
        ("vuln_scale", ["in_range"]),
    ]
    assert analysis.changed == []
    assert replaced(built) == {
        "vuln_offset": "vuln_offset.patched",
        "vuln_scale": "vuln_scale.patched",
    }
    assert not any("in_range" in name for name in symbol_table(built.patch_object(1)))


def test_new_string_literal_and_switch_case(build_fixes: BuildFixes) -> None:
    built = build_fixes("switch")
    analysis = built.level(1).analysis
    # Later functions' string labels were renumbered (.LCn): they must not count as changed.
    assert analysis.changed == ["vuln_format"]
    assert replaced(built) == {"vuln_format": "vuln_format.patched"}
    elf = built.patch_object(1)
    strings = b"".join(
        s.data() for s in elf.iter_sections() if s.name.startswith(".rodata") and "str" in s.name
    )
    assert b"overflow:%d\0" in strings
    # The jump table travels with the function and points back into the new copy.
    table = [s.name for s in elf.iter_sections() if s.name == ".rodata.vuln_format"]
    assert table, "the switch's jump table is missing"
    entries = relocations(elf, ".rodata.vuln_format")
    assert len(entries) >= 6
    assert all(kind == "R_X86_64_PC32" for kind, _, _ in entries)
    assert {what for _, what, _ in entries} == {"section:.text.vuln_format"}
    calls = relocations(elf, ".text.vuln_format")
    assert ("R_X86_64_PLT32", "__snprintf_chk", -4) in calls


def test_new_static_variable_lives_in_the_patch(build_fixes: BuildFixes) -> None:
    built = build_fixes("static-var")
    analysis = built.level(1).analysis
    assert analysis.new_data == ["failed_logins"]
    assert replaced(built) == {"vuln_login": "vuln_login.patched"}
    elf = built.patch_object(1)
    variable = symbol_table(elf)["failed_logins"]
    assert variable["type"] == "STT_OBJECT" and variable["size"] == 4
    section = elf.get_section_by_name(str(variable["section"]))
    assert section is not None
    assert section["sh_type"] == "SHT_NOBITS" and section["sh_flags"] & 0x1  # writable bss
    uses = relocations(elf, ".text.vuln_login")
    assert any(what == f"section:{variable['section']}" for _, what, _ in uses)


def test_struct_layout_change_is_refused(build_fixes: BuildFixes) -> None:
    built = build_fixes("struct")
    level = built.level(1)
    assert level.status == "refused" and level.bundle is None
    reasons = {r.symbol: r.reason for r in level.refusals}
    assert "size 12 -> 20" in reasons["struct record"]
    assert "vuln_record_set" in reasons["struct record"]
    assert "size changed 48 -> 80" in reasons["records"]
    assert not list(built.outdir.glob("*.nsb"))


def test_changed_initial_value_of_a_global_is_refused(build_fixes: BuildFixes) -> None:
    level = build_fixes("global-init").level(1)
    assert level.status == "refused"
    assert [(r.symbol, r.reason.split(";")[0]) for r in level.refusals] == [
        ("vuln_limit", "initial value changed")
    ]


def test_changed_constructor_is_refused(build_fixes: BuildFixes) -> None:
    level = build_fixes("ctor").level(1)
    assert level.status == "refused"
    assert [r.symbol for r in level.refusals] == ["vuln_init"]
    assert "constructor" in level.refusals[0].reason


def test_changed_ifunc_resolver_is_refused(build_fixes: BuildFixes) -> None:
    level = build_fixes("ifunc").level(1)
    assert level.status == "refused"
    assert [r.symbol for r in level.refusals] == ["vuln_popcount"]
    assert "IFUNC resolver resolve_popcount changed" in level.refusals[0].reason


def test_function_too_short_for_the_jump_is_refused(build_fixes: BuildFixes) -> None:
    level = build_fixes("short").level(1)
    assert level.status == "refused"
    assert [str(r) for r in level.refusals] == [
        "vuln_zero: 3 bytes after endbr64: too short to hold the 5-byte jump"
    ]


def test_series_of_three_fixes_gives_cumulative_levels(build_fixes: BuildFixes) -> None:
    built = build_fixes("bounds", "inline", "switch")
    assert [level.status for level in built.result.levels] == ["built"] * 3
    expected = [
        {"vuln_get"},
        {"vuln_get", "vuln_offset", "vuln_scale"},
        {"vuln_get", "vuln_offset", "vuln_scale", "vuln_format"},
    ]
    for number, functions in enumerate(expected, start=1):
        manifest = built.bundle(number).manifest
        assert manifest.level == number
        assert {f.target for f in manifest.functions} == functions
        assert len(manifest.fixes) == number
        assert manifest.cves == sorted(f"CVE-2099-100{n}" for n in (1, 3, 4)[:number])
        assert manifest.effective_version == f"libvuln.so.1+nonstop{number}"
        assert manifest.target.build_id == built.result.reproduction.target.build_id


def test_refused_fix_stops_the_levels_above_it(build_fixes: BuildFixes) -> None:
    built = build_fixes("bounds", "global-init", "switch")
    assert [level.status for level in built.result.levels] == ["built", "refused", "skipped"]
    assert built.level(3).note == "includes fix 2, refused"
    assert [path.name for path in sorted(built.outdir.glob("*.nsb"))] == ["libvuln-level1.nsb"]


def test_unchanged_cold_part_is_linked_not_copied(build_fixes: BuildFixes) -> None:
    built = build_fixes("cold")
    patch = built.level(1).patch
    assert patch is not None and built.level(1).analysis.changed == ["vuln_port"]
    assert replaced(built) == {"vuln_port": "vuln_port.patched"}
    # GCC moved the error path into vuln_port.cold; it did not change, so the new
    # vuln_port jumps into the running library's copy, found through the symbol map.
    assert sorted(patch.links) == ["vuln_port.cold"]
    assert relocations(built.patch_object(1), ".text.vuln_port") == [
        ("R_X86_64_PC32", "vuln_port.cold", -4)
    ]


def test_callers_of_a_changed_compiler_clone_move_with_it(build_fixes: BuildFixes) -> None:
    built = build_fixes("clone")
    analysis = built.level(1).analysis
    # Only weigh.constprop.0 changed; its unchanged callers still call the old clone,
    # so they are patched too, and the clone itself gets no jump of its own.
    assert analysis.changed == ["weigh.constprop.0"]
    assert analysis.dependent == ["vuln_weigh_large", "vuln_weigh_small"]
    assert replaced(built) == {
        "vuln_weigh_large": "vuln_weigh_large.patched",
        "vuln_weigh_small": "vuln_weigh_small.patched",
    }
    elf = built.patch_object(1)
    assert symbol_table(elf)["weigh.constprop.0"]["bind"] == "STB_LOCAL"
    for caller in ("vuln_weigh_small", "vuln_weigh_large"):
        (call,) = relocations(elf, f".text.{caller}")
        assert call[1] == "section:.text.weigh.constprop.0"
