"""Original-code trampolines and dispatch stubs, checked by disassembling what is encoded."""

from __future__ import annotations

import capstone
import pytest

from nonstop.userspace.dispatch import STUB_SIZE, stub_bytes
from nonstop.userspace.errors import SiteError
from nonstop.userspace.trampoline import ENDBR64, Displaced, plan_displaced

PATCH = 0x7F00_0000_1004
AT = 0x7EFF_C000_0100  # the trampoline's place: 1 GiB below, in rel32 reach


def decoded(code: bytes, at: int) -> list[tuple[str, str]]:
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return [(i.mnemonic, i.op_str) for i in disassembler.disasm(code, at)]


def test_rip_relative_operand_keeps_its_target_and_jumps_back():
    # mov rax, [rip+0x2e85]; add dword ptr [rip+0x2eae], 1
    code = bytes.fromhex("488b05852e0000 8305ae2e000001")
    displaced = plan_displaced("f", code, PATCH)
    assert displaced.length == 7 and not displaced.returns  # one instruction covers the jump
    out = displaced.encode(AT, PATCH, cet=False)
    assert len(out) == displaced.size(cet=False) == 12
    (mov, back) = decoded(out, AT)
    displacement = PATCH + 7 + 0x2E85 - (AT + 7)
    assert mov == ("mov", f"rax, qword ptr [rip + {displacement:#x}]")
    assert back == ("jmp", hex(PATCH + 7))


def test_short_conditional_jump_is_widened_with_the_same_condition_and_target():
    code = bytes.fromhex("85ff 7508 b801000000 c3")  # test edi,edi; jne +8; mov eax,1; ret
    displaced = plan_displaced("f", code, PATCH)
    assert displaced.length == 9 and not displaced.returns
    out = displaced.encode(AT, PATCH, cet=True)
    assert out.startswith(ENDBR64)
    assert decoded(out, AT)[1:] == [
        ("test", "edi, edi"),
        ("jne", hex(PATCH + 4 + 8)),
        ("mov", "eax, 1"),
        ("jmp", hex(PATCH + 9)),
    ]


def test_call_keeps_its_target():
    code = bytes.fromhex("e8fb0f0000 4889c7")  # call +0xffb; mov rdi, rax
    displaced = plan_displaced("f", code, PATCH)
    assert decoded(displaced.encode(AT, PATCH, cet=False), AT) == [
        ("call", hex(PATCH + 5 + 0xFFB)),
        ("jmp", hex(PATCH + 5)),
    ]


def test_very_short_function_is_copied_up_to_its_ret():
    displaced = plan_displaced("zero", bytes.fromhex("31c0 c3"), PATCH)
    assert displaced.returns and displaced.length == 3
    assert decoded(displaced.encode(AT, PATCH, cet=False), AT) == [("xor", "eax, eax"), ("ret", "")]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("e2fe 90909090", "cannot be relocated"),  # loop
        ("e3fe 90909090", "cannot be relocated"),  # jrcxz
        ("c7f800000000", "cannot be relocated"),  # xbegin
        ("31c0 74fc 909090", "branches into the displaced"),  # je back to the entry
        ("31c0 ffd0", "too short"),  # xor; call rax: ends without ret/jmp
    ],
)
def test_what_cannot_move_is_refused_with_a_reason(code, reason):
    with pytest.raises(SiteError, match=reason):
        plan_displaced("f", bytes.fromhex(code), PATCH)


def test_plan_survives_the_cache():
    displaced = plan_displaced("f", bytes.fromhex("488b05852e0000"), PATCH)
    assert Displaced.from_json(displaced.to_json()) == displaced


@pytest.mark.parametrize("cet", [False, True])
def test_dispatch_stub_tests_the_flag_then_goes_to_new_or_fallback(cet):
    at, flag, new, slot = AT, AT - 0xF0, AT + 0x1000, AT + 0x800
    stub = stub_bytes(at, flag, new, slot, cet)
    assert len(stub) == STUB_SIZE and stub.startswith(ENDBR64) == cet
    instructions = decoded(stub, at)[int(cet) :]
    first = at + 4 * cet
    assert instructions[:3] == [
        ("cmp", f"byte ptr [rip - {first + 7 - flag:#x}], 0"),
        ("jne", hex(new)),
        ("jmp", f"qword ptr [rip + {slot - (first + 19):#x}]"),
    ]
    assert all(mnemonic == "int3" for mnemonic, _ in instructions[3:])
