"""Entry-site validation with capstone, on hand-assembled bytes and on the fixture library."""

from __future__ import annotations

import pytest

from nonstop.userspace.errors import SiteError
from nonstop.userspace.sites import ENDBR64, jump_bytes, jump_target, plan_site

ENTRY = 0x7F00_0000_1000
PROLOGUE = ENDBR64 + bytes.fromhex("55 4889e5 31c0")  # push rbp; mov rbp,rsp; xor eax,eax


def test_jump_goes_after_endbr64_and_saves_the_bytes_it_replaces():
    code = PROLOGUE + bytes.fromhex("5d c3")
    site = plan_site("f", ENTRY, len(code), code, set())
    assert site.patch_address == ENTRY + 4
    assert site.original == code[4:9]


def test_function_without_endbr64_is_patched_at_its_entry():
    code = bytes.fromhex("55 4889e5 31c0 5d c3")
    assert plan_site("f", ENTRY, len(code), code, set()).patch_address == ENTRY


def test_branch_into_the_overwritten_bytes_is_refused():
    # jmp at offset 10 back to entry+5: inside the bytes the jump would overwrite.
    code = PROLOGUE + bytes.fromhex("ebf9 c3")
    with pytest.raises(SiteError, match="branches into the bytes"):
        plan_site("f", ENTRY, len(code), code, set())


def test_branch_to_the_entry_itself_is_a_tail_call_and_allowed():
    code = PROLOGUE + bytes.fromhex("ebf6 c3")  # jmp to entry+4, the patch address
    assert plan_site("f", ENTRY, len(code), code, set()).patch_address == ENTRY + 4


def test_very_short_function_uses_alignment_padding():
    code = ENDBR64 + bytes.fromhex("31c0 c3") + bytes.fromhex("0f1f8000000000 90 90")
    site = plan_site("zero", ENTRY, 7, code, {ENTRY})
    assert site.patch_address == ENTRY + 4


def test_very_short_function_followed_by_another_function_is_refused():
    code = ENDBR64 + bytes.fromhex("31c0 c3") + bytes.fromhex("31c0 c3 90 90 90 90 90 90")
    with pytest.raises(SiteError, match="no room"):
        plan_site("zero", ENTRY, 7, code, {ENTRY, ENTRY + 7})


def test_jump_encoding_round_trips_and_respects_rel32_reach():
    data = jump_bytes(ENTRY, ENTRY - 0x1000)
    assert jump_target(data, ENTRY) == ENTRY - 0x1000
    with pytest.raises(SiteError, match="reach"):
        jump_bytes(ENTRY, ENTRY + (1 << 32))
