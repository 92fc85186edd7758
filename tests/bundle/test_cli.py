"""`nonstop keys generate` and `nonstop bundle create|inspect|verify`, run as commands."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nonstop.bundle import TrustedKeys, open_bundle
from nonstop.bundle.symbols import replacement_refusal

NONSTOP = str(Path(sys.executable).parent / "nonstop")
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([NONSTOP, *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"nonstop {' '.join(args)} failed: {done.stderr}")
    return done


@pytest.fixture(scope="module")
def patch_object(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("obj")
    source = directory / "patch.c"
    source.write_text("void qsort_fixed(void *base, unsigned long n) { (void)base; (void)n; }\n")
    obj = directory / "patch.o"
    subprocess.run(
        [
            "gcc",
            "-c",
            "-O2",
            "-fPIC",
            "-ffunction-sections",
            "-fdata-sections",
            "-o",
            str(obj),
            str(source),
        ],
        check=True,
    )
    return obj


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    done = run("keys", "generate", "--out", str(directory))
    assert "key id" in done.stdout
    return directory


@pytest.fixture(scope="module")
def bundle_file(keys, patch_object, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "libc-1.nsb"
    done = run(
        "bundle",
        "create",
        "--kind",
        "userspace",
        "--target",
        LIBC,
        "--object",
        str(patch_object),
        "--replace",
        "qsort=qsort_fixed",
        "--level",
        "1",
        "--cve",
        "CVE-2024-9999",
        "--key",
        str(keys / "signing.key"),
        "-o",
        str(out),
    )
    key_id = TrustedKeys.from_dir(keys).key_ids[0]
    assert key_id in done.stdout
    return out


def test_created_bundle_records_the_code_of_each_replaced_function(bundle_file, keys):
    # qsort's definition as readelf shows it (libc's text is mapped at its file offset).
    line = next(
        line.split()
        for line in subprocess.run(
            ["readelf", "-W", "--dyn-syms", LIBC], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if line.endswith(" qsort@@GLIBC_2.2.5")
    )
    value, size = int(line[1], 16), int(line[2])
    with open(LIBC, "rb") as handle:
        handle.seek(value)
        expected = hashlib.sha256(handle.read(size)).hexdigest()
    (function,) = open_bundle(bundle_file, TrustedKeys.from_dir(keys)).manifest.functions
    assert function.original_sha256 == expected


def test_ifunc_target_is_refused_up_front_with_the_engines_reason(keys, patch_object, tmp_path):
    # memcpy's default version is an IFUNC (its hidden GLIBC_2.2.5 version is a plain function).
    done = run(
        "bundle", "create", "--kind", "userspace", "--target", LIBC,
        "--object", str(patch_object), "--replace", "memcpy=qsort_fixed", "--level", "1",
        "--key", str(keys), "-o", str(tmp_path / "ifunc.nsb"), check=False,
    )  # fmt: skip
    assert done.returncode == 1 and not (tmp_path / "ifunc.nsb").exists()
    assert done.stderr == f"nonstop: error: {replacement_refusal('memcpy', 'ifunc')}\n"
    assert "memcpy is an IFUNC resolver" in done.stderr


def test_keys_generate_prints_key_id_and_refuses_overwrite(keys):
    done = run("keys", "generate", "--out", str(keys), check=False)
    assert done.returncode == 1
    assert "refusing to overwrite" in done.stderr


def test_created_bundle_verifies_and_targets_libc(bundle_file, keys):
    bundle = open_bundle(bundle_file, TrustedKeys.from_dir(keys))
    manifest = bundle.manifest
    assert manifest.target.soname == "libc.so.6"  # type: ignore[union-attr]
    assert manifest.functions[0].target == "qsort"
    assert manifest.cves == ["CVE-2024-9999"]
    assert bundle.payload("object").startswith(b"\x7fELF")


def test_verify_accepts_only_trusted_signer(bundle_file, keys, tmp_path):
    done = run("bundle", "verify", str(bundle_file), "--keys", str(keys))
    assert done.stdout.startswith("OK:")
    other = tmp_path / "other"
    run("keys", "generate", "--out", str(other))
    done = run("bundle", "verify", str(bundle_file), "--keys", str(other), check=False)
    assert done.returncode == 1
    assert "not trusted" in done.stderr


def test_verify_refuses_tampered_file(bundle_file, keys, tmp_path):
    data = bytearray(bundle_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "tampered.nsb"
    tampered.write_bytes(bytes(data))
    done = run("bundle", "verify", str(tampered), "--keys", str(keys), check=False)
    assert done.returncode == 1 and "error:" in done.stderr


def test_clear_errors_for_missing_files(keys, tmp_path):
    done = run("bundle", "verify", str(tmp_path / "nope.nsb"), "--keys", str(keys), check=False)
    assert done.returncode == 1 and "not found" in done.stderr
    done = run(
        "bundle", "verify", str(tmp_path / "nope.nsb"), "--keys", str(tmp_path / "k"), check=False
    )
    assert done.returncode == 1 and "trusted keys directory not found" in done.stderr
    done = run(
        "bundle",
        "create",
        "--kind",
        "userspace",
        "--target",
        LIBC,
        "--object",
        str(tmp_path / "missing.o"),
        "--replace",
        "a=b",
        "--level",
        "1",
        "--key",
        str(keys),
        "-o",
        str(tmp_path / "x.nsb"),
        check=False,
    )
    assert done.returncode == 1 and "cannot read patch object" in done.stderr


def test_inspect_text_and_json(bundle_file, keys):
    text = run("bundle", "inspect", str(bundle_file)).stdout
    assert "NOT verified" in text and "qsort" in text and "CVE-2024-9999" in text
    document = json.loads(
        run("bundle", "inspect", str(bundle_file), "--json", "--keys", str(keys)).stdout
    )
    assert document["verified"] is True
    assert document["manifest"]["level"] == 1
    assert document["manifest"]["target"]["package"]["name"] == "libc6"


def test_kernel_bundle_create(keys, tmp_path):
    module = tmp_path / "livepatch_demo.ko"
    module.write_bytes(b"\x7fELF fake module for packing only")
    out = tmp_path / "k.nsb"
    run(
        "bundle",
        "create",
        "--kind",
        "kernel",
        "--module",
        str(module),
        "--kernel-release",
        "6.1.0-26-amd64",
        "--kernel-build-id",
        "ab" * 20,
        "--function",
        "cmdline_proc_show",
        "--level",
        "3",
        "--key",
        str(keys),
        "-o",
        str(out),
    )
    manifest = open_bundle(out, TrustedKeys.from_dir(keys)).manifest
    assert manifest.kind == "kernel" and manifest.level == 3
    assert manifest.functions[0].object == "vmlinux"
    assert manifest.effective_version == "6.1.0-26-amd64+nonstop3"


def test_outputs_that_cannot_be_written_are_one_line(keys, patch_object, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    done = run("keys", "generate", "--out", str(not_a_dir / "keys"), check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip() == f"nonstop: error: cannot write {not_a_dir / 'keys'}: Not a directory"
    )
    out = not_a_dir / "libc-1.nsb"
    done = run(
        "bundle", "create", "--kind", "userspace", "--target", LIBC,
        "--object", str(patch_object), "--replace", "qsort=qsort_fixed", "--level", "1",
        "--key", str(keys / "signing.key"), "-o", str(out), check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"nonstop: error: cannot write {out}: Not a directory"
