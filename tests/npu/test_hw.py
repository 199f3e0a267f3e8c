"""NPU descriptions: the shipped generations load and differ; bad files fail with file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from npu_graphs import tiny_chip_toml

from tessera.npu.hw import DESCRIPTIONS_DIR, NpuDescription, NpuDescriptionError, list_descriptions, load_description
from tessera.targets import list_targets

GENS = ("npu-gen1", "npu-gen2", "npu-gen3")


def test_shipped_generations_load_and_differ() -> None:
    assert set(GENS) <= set(list_descriptions())
    g1, g2, g3 = (load_description(n) for n in GENS)
    assert (g1.matrix.rows, g1.matrix.cols, g1.matrix.dataflows) == (16, 16, ("weight-stationary",))
    assert g1.matrix.dtypes == (("i8", "i32"),) and g1.vector is None and g1.execution.queues == ("inorder",)
    assert (g1.scratchpad.bytes, g1.accumulator.bytes, g1.dram.bytes_per_cycle) == (256 << 10, 64 << 10, 16)
    assert (g2.matrix.rows, g2.matrix.cols, g2.matrix.dataflows) == (32, 32, ("output-stationary",))
    assert g2.matrix.supports("bf16", "f32") and g2.matrix.supports("i8", "i32") and g2.vector.lanes == 32
    assert (g2.scratchpad.bytes, g2.accumulator.bytes, g2.dram.bytes_per_cycle) == (1 << 20, 256 << 10, 64)
    assert g2.execution.decoupled and set(g2.execution.queues) == {"load", "compute", "vector", "store"}
    assert g3.chip.cores == 4 and g3.matrix.kind == "dot-product" and (g3.matrix.rows, g3.matrix.cols) == (64, 32)
    assert g3.scratchpad.bytes + g3.accumulator.bytes == 512 << 10 and g3.l2.bytes == 4 << 20
    assert g3.dram.bytes_per_cycle == 128 and g3.peak_macs_per_cycle == 4 * 64 * 32
    assert len({g.hash for g in (g1, g2, g3)}) == 3
    s = g3.summary()
    assert s["matrix"] == "64x32 dot-product" and s["L2"] == "4 MiB" and s["cores"] == "4"


def test_cpu_targets_skip_npu_files() -> None:
    assert not any(n.startswith("npu-") for n in list_targets())
    assert "x86-avx2" in list_targets()


def test_unknown_name() -> None:
    with pytest.raises(NpuDescriptionError, match="unknown NPU description 'npu-gen9'.*npu-gen1"):
        load_description("npu-gen9")
    with pytest.raises(NpuDescriptionError, match="unknown NPU description 'x86-avx2'"):
        load_description("x86-avx2")


def _variant(tmp_path: Path, old: str, new: str, base: str = "npu-gen2") -> Path:
    text = (DESCRIPTIONS_DIR / f"{base}.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old,new,pattern", [
    ("rows = 32\n", "rowz = 32\n", r"key 'matrix.rowz': unknown key in table \[matrix\]; did you mean 'rows'\?"),
    ("[dram]\n", "[dram]\nbandwith = 3\n", r"'dram.bandwith': unknown key in table \[dram\]"),
    ("latency = 100\n", "", r"key 'dram.latency': missing required field in table \[dram\]"),
    ("bytes = 262144 ", "bytes = 1024 ", r"memory.accumulator.bytes.*cannot hold one 32x32 array tile"),
    ("bytes_per_cycle = 64\n", "bytes_per_cycle = 0\n", r"'dram.bytes_per_cycle': must be > 0"),
    ("banks = 8\n", "banks = 6\n", r"'memory.scratchpad.banks': must be a power of two, got 6"),
    ('dtypes = [["i8", "i32"], ["bf16", "f32"]]', 'dtypes = [["i8", "f32"]]',
     r"matrix.dtypes\[0\]': unsupported dtype pair \['i8', 'f32'\]"),
    ('dataflows = ["output-stationary"]', 'dataflows = ["channel-reduction"]',
     r"matrix.dataflows\[0\]': unknown value 'channel-reduction'"),
    ('dataflows = ["output-stationary"]', 'dataflows = ["output-stationery"]',
     r"did you mean 'output-stationary'"),
    ("decoupled = true", "decoupled = false", r"execution.queues\[0\]': unknown value 'load'"),
    ("double_buffered_weights = true", "double_buffered_weights = 1", r"must be true or false, got 1"),
    ('kind = "systolic"', 'kind = "cgra"', r"'matrix.kind': must be one of systolic, dot-product, got 'cgra'"),
])
def test_invalid_descriptions(tmp_path: Path, old: str, new: str, pattern: str) -> None:
    path = _variant(tmp_path, old, new)
    with pytest.raises(NpuDescriptionError, match=pattern) as info:
        load_description(path)
    assert str(path.resolve()) in str(info.value)


def test_vector_queue_needs_vector_unit(tmp_path: Path) -> None:
    text = (DESCRIPTIONS_DIR / "npu-gen2.toml").read_text()
    start, end = text.index("[vector]"), text.index("[memory.scratchpad]")
    path = tmp_path / "novec.toml"
    path.write_text(text[:start] + text[end:])
    with pytest.raises(NpuDescriptionError, match="'vector' queue but the description has no \\[vector\\] unit"):
        load_description(path)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text("name = \n")
    with pytest.raises(NpuDescriptionError, match="invalid TOML"):
        load_description(bad)
    with pytest.raises(NpuDescriptionError, match="does not exist"):
        load_description(tmp_path / "nope.toml")


def test_brand_new_description(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    d = load_description(path)
    assert isinstance(d, NpuDescription) and d.matrix.pes == 64 and d.vector is None and d.l2 is None
    assert d.energy is None and d.scratchpad.holds == ("inputs", "weights")


TINY_TOML = tiny_chip_toml(store_ops=("bias", "scale", "relu", "cast"))


def test_vector_unit_op_support(tmp_path: Path) -> None:
    v = load_description("npu-gen2").vector
    assert v.supports("reduce_sum", "bf16") and v.supports("sub") and not v.supports("tanh")
    assert "exp" in v.ops and "reduce_max" in v.ops
    path = _variant(tmp_path, "exp = 4\n", "")
    v2 = load_description(path).vector
    assert not v2.supports("exp") and "exp" not in v2.ops and v2.supports("add", "f32")
