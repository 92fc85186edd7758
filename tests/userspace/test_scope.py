"""Symbol resolution in a running process, as ld.so resolved it."""

from __future__ import annotations

import pytest

from nonstop.bundle.symbols import replacement_refusal, symbol_map_of
from nonstop.userspace.elfmodel import ModelCache
from nonstop.userspace.errors import LinkError
from nonstop.userspace.image import ProcessImage
from nonstop.userspace.memory import ProcessMemory
from nonstop.userspace.scope import Scope, default_definition


def scope_for(pid, fixture_build):
    image = ProcessImage(pid, ModelCache())
    (target,) = [m for m in image.modules if m.path.endswith("libnsfix.so.1")]
    memory = ProcessMemory(pid)
    return Scope(image, memory, target, symbol_map_of(fixture_build.library)), image, memory


def test_ifunc_resolves_to_the_implementation_the_process_uses(start_target, fixture_build):
    target = start_target(busy=0, sleepers=0)
    scope, image, memory = scope_for(target.pid, fixture_build)
    (libc,) = [m for m in image.modules if "libc.so" in m.path]
    (strlen,) = [d for d in libc.model.defined("strlen") if not d.hidden]
    assert strlen.type == "ifunc"
    from_target_got = scope.resolve_global("strlen")
    assert from_target_got is not None and from_target_got.how == "target GOT"
    # Found independently from libc's own IRELATIVE slots: the same implementation.
    assert scope._ifunc(libc, "strlen", strlen.value) == from_target_got.address
    assert from_target_got.address != libc.base + strlen.value  # not the resolver
    memory.close()


def test_hidden_versions_are_skipped(start_target, fixture_build):
    target = start_target(busy=0, sleepers=0)
    scope, image, memory = scope_for(target.pid, fixture_build)
    (libc,) = [m for m in image.modules if "libc.so" in m.path]
    versions = {(d.version, d.hidden) for d in libc.model.defined("memcpy")}
    assert ("GLIBC_2.2.5", True) in versions and ("GLIBC_2.14", False) in versions
    chosen = default_definition(libc.model.defined("memcpy"))
    assert chosen is not None and chosen.version == "GLIBC_2.14"
    # The global-scope walk (bypassing the target's GOT) lands where ld.so bound the target.
    scope.target = libc  # libc does not import memcpy: forces the scope search
    found = scope.resolve_global("memcpy")
    assert found is not None and found.how.endswith("(ifunc)")
    assert found.address == scope_for(target.pid, fixture_build)[0].resolve_global("memcpy").address
    memory.close()


def test_copy_relocated_variable_resolves_to_the_executable(start_target, fixture_build):
    target = start_target(busy=0, sleepers=0)
    scope, image, memory = scope_for(target.pid, fixture_build)
    exe = next(m for m in image.modules if m.path.endswith("nsfix_prog"))
    assert "nsfix_calls" in exe.model.copies
    found = scope.resolve("nsfix_calls")
    assert found is not None
    assert any(m.contains(found.address) for m in exe.mappings)
    memory.close()


def test_static_symbols_come_from_the_symbol_map(start_target, fixture_build):
    target = start_target(busy=0, sleepers=0)
    scope, _, memory = scope_for(target.pid, fixture_build)
    found = scope.resolve("hits")
    assert found is not None and found.how == "symbol map local"
    assert scope.resolve_global("hits") is None  # static: invisible to the global scope
    memory.close()


def test_ifunc_target_is_refused_with_the_reason_bundle_create_gives(start_target, fixture_build):
    target = start_target(busy=0, sleepers=0)
    _, image, memory = scope_for(target.pid, fixture_build)
    (libc,) = [m for m in image.modules if "libc.so" in m.path]
    libc_scope = Scope(image, memory, libc, None)
    with pytest.raises(LinkError) as refused:
        libc_scope.target_function("memcpy")  # default version: an IFUNC
    assert str(refused.value) == replacement_refusal("memcpy", "ifunc")
    memory.close()
