"""Target descriptions: built-ins load and validate, bad files fail with file + key, stable hashes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tessera.errors import TesseraError
from tessera.graph.dtypes import DType
from tessera.targets import CpuTarget, TargetError, list_targets, load_target
from tessera.targets.target import DESCRIPTIONS_DIR

BUILTINS = {"x86-avx2": ("x86_64", 256, "_mm256_fmadd_ps", "immintrin.h"),
            "x86-avx512": ("x86_64", 512, "_mm512_fmadd_ps", "immintrin.h"),
            "arm-neon": ("aarch64", 128, "vfmaq_f32", "arm_neon.h")}


def test_builtins_listed_and_load() -> None:
    assert set(BUILTINS) <= set(list_targets())
    for name, (arch, bits, fma, header) in BUILTINS.items():
        t = load_target(name)
        assert isinstance(t, CpuTarget) and t.name == name and t.arch == arch and t.vector_bits == bits
        assert t.lanes("f32") == bits // 32 and t.lanes(DType.float32) == bits // 32 and t.lanes("i8") == bits // 8
        fma_i = t.intrinsic("fma", "f32")
        assert fma_i is not None and (fma_i.c_name, fma_i.header, fma_i.lanes) == (fma, header, bits // 32)
        assert t.gcc_vector_extensions and t.cores == 0 and t.caches.l1d < t.caches.l2
        assert "-O3" in t.compiler.flags and "-fPIC" in t.compiler.flags
        assert Path(t.source) == (DESCRIPTIONS_DIR / f"{name}.toml").resolve()
    assert "-mavx2" in load_target("x86-avx2").compiler.flags
    assert "-mavx512f" in load_target("x86-avx512").compiler.flags
    arm = load_target("arm-neon")
    assert arm.compiler.cross_cc == "aarch64-linux-gnu-gcc" and arm.compiler.runner[0] == "qemu-aarch64"


def test_peak_gflops() -> None:
    t = load_target("x86-avx2")  # 3.0 GHz, 2 FMA pipes x 8 f32 lanes x 2 flops = 32 flops/cycle
    assert t.flops_per_cycle_f32 == 32
    assert t.peak_gflops(1) == pytest.approx(96.0) and t.peak_gflops(4) == pytest.approx(384.0)
    assert load_target("arm-neon").peak_gflops(1) == pytest.approx(2.5 * 2 * 2 * 4)


def test_hash_stable_and_distinct(tmp_path: Path) -> None:
    hashes = {n: load_target(n).hash for n in BUILTINS}
    assert len(set(hashes.values())) == len(hashes)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in hashes.values())
    # the same content from another path hashes the same (the path is not content)
    copy = tmp_path / "copy.toml"
    copy.write_text((DESCRIPTIONS_DIR / "x86-avx2.toml").read_text())
    t = load_target(copy)
    assert t.hash == hashes["x86-avx2"] and t == load_target("x86-avx2")
    # any content change changes the hash
    other = tmp_path / "other.toml"
    other.write_text(copy.read_text().replace("frequency_ghz = 3.0", "frequency_ghz = 3.1"))
    assert load_target(other).hash != hashes["x86-avx2"]


def test_new_cpu_is_a_new_file(tmp_path: Path) -> None:
    text = (DESCRIPTIONS_DIR / "arm-neon.toml").read_text()
    text = text.replace('name = "arm-neon"', 'name = "arm-sve256"').replace("vector_bits = 128", "vector_bits = 256")
    for dt, n in {"f64": 2, "f32": 4, "f16": 8, "i64": 2, "i32": 4, "i16": 8, "i8": 16}.items():
        text = text.replace(f"\n{dt} = {n}\n", f"\n{dt} = {2 * n}\n")
    path = tmp_path / "arm-sve256.toml"
    path.write_text(text)
    t = load_target(str(path))
    assert t.name == "arm-sve256" and t.lanes("f32") == 8 and t.intrinsic("fma").lanes == 4


def test_unknown_target_name() -> None:
    with pytest.raises(TargetError, match="unknown target 'pdp11'.*x86-avx2"):
        load_target("pdp11")


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = (DESCRIPTIONS_DIR / "x86-avx2.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(("old", "new", "key", "why"), [
    ("vector_bits = 256", "vector_bits = 256\nturbo = true", "turbo", "unknown key"),
    ("line = 64", "line = 64\nl4 = 1", "caches.l4", "unknown key"),
    ("vector_bits = 256\n", "", "vector_bits", "missing required field"),
    ('cc = "gcc"\n', "", "compiler.cc", "missing required field"),
    ("l1d = 32768", "l1d = -32768", "caches.l1d", "must be >= 1"),
    ("line = 64", "line = 48", "caches.line", "power of two"),
    ("l2 = 524288", "l2 = 1024", "caches.l2", "smaller than caches.l1d"),
    ("cores = 0 ", "cores = -2 ", "cores", "must be >= 0"),
    ('arch = "x86_64"', 'arch = "mips"', "arch", "must be one of"),
    ("vector_bits = 256", "vector_bits = 384", "vector_bits", "power of two"),
    ("f32 = 8", "f32 = 4", "lanes.f32", "!= vector_bits 256"),
    ("frequency_ghz = 3.0", 'frequency_ghz = "fast"', "frequency_ghz", "must be a number"),
    ("fma_units = 2", "fma_units = 0", "fma_units", "must be >= 1"),
    ('dtype = "f32"', 'dtype = "f33"', "intrinsics[0].dtype", "unknown dtype"),
    ("lanes = 8\n", "lanes = 16\n", "intrinsics[0].lanes", "wider than vector_bits"),
    ('flags = ["-O3"', 'flags = [3, "-O3"', "compiler.flags[0]", "must be a string"),
])
def test_invalid_descriptions(tmp_path: Path, old: str, new: str, key: str, why: str) -> None:
    path = _variant(tmp_path, old, new)
    with pytest.raises(TargetError) as info:
        load_target(path)
    msg = str(info.value)
    assert str(path.resolve()) in msg and f"key {key!r}" in msg and why in msg, msg
    assert isinstance(info.value, TesseraError)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = _variant(tmp_path, 'name = "x86-avx2"', 'name = "x86-avx2')
    with pytest.raises(TargetError, match=f"{path.name}: invalid TOML"):
        load_target(path)
    with pytest.raises(TargetError, match="does not exist"):
        load_target(tmp_path / "none.toml")


def test_targets_are_immutable_and_picklable() -> None:
    import pickle

    t = load_target("arm-neon")
    with pytest.raises(AttributeError):
        t.cores = 4  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(t)) == t and hash(t) == hash(load_target("arm-neon"))
    assert os.fspath(t.source).endswith("arm-neon.toml")
