"""CompiledModel over a hand-written C library implementing the ABI: results, input checks,
threads, errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import numpy as np
import pytest

from tessera.errors import InputCountError, InputDtypeError, InputShapeError
from tessera.runtime.compiled_model import CompiledModel, aligned_empty, default_num_threads
from tessera.runtime.program import ArtifactError, ExecutionError, TargetInfo

from .conftest import Fixture, build_fixture_library


def inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 8)).astype(np.float32), np.array([1, -2, 7], dtype=np.int64) * (seed + 1)


@pytest.fixture
def model(fixture_lib: Fixture) -> CompiledModel:
    return CompiledModel(fixture_lib.library, fixture_lib.manifest(), fixture_lib.weights)


def test_call_results(model: CompiledModel, fixture_lib: Fixture) -> None:
    x, y = inputs()
    s, t, n = model(x, y)
    want_s, want_t = fixture_lib.expected(x, y)
    np.testing.assert_allclose(s, want_s, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(t, want_t)
    assert s.dtype == np.float32 and s.shape == (4, 8)
    assert t.dtype == np.int64 and n.dtype == np.int32


def test_mapping_and_run_dict(model: CompiledModel, fixture_lib: Fixture) -> None:
    x, y = inputs(1)
    by_pos = model(x, y)
    by_name = model({"y": y, "x": x})
    for a, b in zip(by_pos, by_name, strict=True):
        np.testing.assert_array_equal(a, b)
    d = model.run_dict(x, y)
    assert list(d) == ["sum", "twice", "nthreads"]
    np.testing.assert_array_equal(d["twice"], 2 * y)


def test_outputs_are_fresh_each_call(model: CompiledModel) -> None:
    x, y = inputs()
    first = model(x, y)
    keep = first[0].copy()
    second = model(x + 1, y)
    assert not np.shares_memory(first[0], second[0])
    np.testing.assert_array_equal(first[0], keep)
    np.testing.assert_allclose(second[0], keep + 1, rtol=1e-6)


def test_non_contiguous_and_unaligned_inputs(model: CompiledModel, fixture_lib: Fixture) -> None:
    x, y = inputs()
    xt = np.ascontiguousarray(x.T).T  # Fortran order, same values
    assert not xt.flags.c_contiguous
    # an int64 view 8 bytes past a 64-byte boundary: misaligned for the library, which checks it
    buf = aligned_empty(64 + 24)[8 : 8 + 24].view(np.int64)
    buf[...] = y
    assert buf.ctypes.data % 64 != 0
    s, t, _ = model(xt, buf)  # the fixture returns 5 on a misaligned pointer: the runtime must copy
    np.testing.assert_allclose(s, fixture_lib.expected(x, y)[0], rtol=1e-6)
    np.testing.assert_array_equal(t, 2 * y)


def test_python_lists_are_converted(model: CompiledModel) -> None:
    x, _ = inputs()
    _, t, _ = model(x.tolist(), [1, 2, 3])
    np.testing.assert_array_equal(t, [2, 4, 6])


def test_input_count_errors(model: CompiledModel) -> None:
    x, y = inputs()
    with pytest.raises(InputCountError, match=r"takes 2 input\(s\) \(x, y\), got 1"):
        model(x)
    with pytest.raises(InputCountError, match=r"got 3"):
        model(x, y, y)
    with pytest.raises(InputCountError, match="missing y; unknown z"):
        model({"x": x, "z": y})


def test_input_dtype_errors(model: CompiledModel) -> None:
    x, y = inputs()
    with pytest.raises(InputDtypeError, match="input 'x': expected dtype float32, got float64"):
        model(x.astype(np.float64), y)
    with pytest.raises(InputDtypeError, match="input 'y': expected dtype int64, got int32"):
        model(x, y.astype(np.int32))
    with pytest.raises(InputDtypeError, match="input 'y': expected dtype int64, got float64"):
        model(x, [1.5, 2.0, 3.0])  # lossy list conversion is refused, not truncated
    with pytest.raises(InputDtypeError, match="expected dtype float32, got >f4"):
        model(x.astype(">f4"), y)


def test_input_shape_errors(model: CompiledModel) -> None:
    x, y = inputs()
    with pytest.raises(InputShapeError, match=r"input 'x': expected shape \(4, 8\), got \(8, 4\)"):
        model(x.T.copy(), y)
    with pytest.raises(InputShapeError, match=r"input 'y': expected shape \(3,\), got \(1, 3\)"):
        model(x, y[None])


def test_nonzero_status_raises(model: CompiledModel) -> None:
    x, _ = inputs()
    with pytest.raises(ExecutionError, match="model 'fixture': tsr_run failed with status 3"):
        model(x, np.array([-1, 0, 0], dtype=np.int64))


def test_num_threads(model: CompiledModel) -> None:
    x, y = inputs()
    assert model.num_threads == default_num_threads() >= 1
    assert model(x, y)[2][0] == default_num_threads()
    model.num_threads = 1
    assert model.num_threads == 1 and model(x, y)[2][0] == 1
    model.num_threads = 3  # more threads than cores is allowed (OpenMP oversubscribes)
    assert model(x, y)[2][0] == 3
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="num_threads must be a positive integer"):
            model.num_threads = bad
    assert model.num_threads == 3


def test_concurrent_calls_are_serialised(model: CompiledModel, fixture_lib: Fixture) -> None:
    results: dict[int, list[np.ndarray]] = {}

    def work(i: int) -> None:
        x, y = inputs(i)
        for _ in range(50):
            results[i] = model(x, y)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        x, y = inputs(i)
        np.testing.assert_allclose(results[i][0], fixture_lib.expected(x, y)[0], rtol=1e-6)


def test_weights_are_copied_aligned_and_read_only(fixture_lib: Fixture) -> None:
    blob = fixture_lib.weights.copy()
    m = CompiledModel(fixture_lib.library, fixture_lib.manifest(), blob.tobytes())
    assert m.weights.ctypes.data % 64 == 0
    assert not m.weights.flags.writeable
    blob[:] = 0  # the model holds its own copy
    np.testing.assert_array_equal(m.weights, fixture_lib.weights)


def test_construction_errors(fixture_lib: Fixture, tmp_path) -> None:
    with pytest.raises(ArtifactError, match="weights blob has 100 bytes, manifest declares 192"):
        CompiledModel(fixture_lib.library, fixture_lib.manifest(), np.zeros(100, np.uint8))
    with pytest.raises(ArtifactError, match="cannot load compiled library"):
        CompiledModel(tmp_path / "missing.so", fixture_lib.manifest(), fixture_lib.weights)
    other = TargetInfo(
        name="arm", hash="x", arch="riscv64" if fixture_lib.manifest().target.arch != "riscv64" else "x86_64"
    )
    with pytest.raises(ArtifactError, match=f"compiled for {other.arch}"):
        CompiledModel(fixture_lib.library, fixture_lib.manifest(target=other), fixture_lib.weights)


def test_library_without_abi_symbols(tmp_path, fixture_lib: Fixture) -> None:
    src = tmp_path / "empty.c"
    src.write_text("int unrelated(void) { return 1; }\n")
    lib = tmp_path / "empty.so"
    subprocess.run([shutil.which("gcc"), "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    with pytest.raises(ArtifactError, match="not a Tessera model library .*tsr_run"):
        CompiledModel(lib, fixture_lib.manifest(), fixture_lib.weights)


def test_repr(model: CompiledModel) -> None:
    r = repr(model)
    assert "fixture" in r and "x: float32[4, 8]" in r and "3 output(s)" in r


def test_rebuilt_library_at_same_path_is_not_stale(fixture_lib: Fixture, tmp_path) -> None:
    """dlopen returns an already-loaded library for a known path; a rebuilt one must still be used."""
    path = tmp_path / "model.so"
    shutil.copy(fixture_lib.library, path)
    v1 = CompiledModel(path, fixture_lib.manifest(), fixture_lib.weights)
    os.replace(build_fixture_library(tmp_path / "v2.so", "TWICE_FACTOR=3"), path)
    v2 = CompiledModel(path, fixture_lib.manifest(), fixture_lib.weights)
    x, y = inputs()
    np.testing.assert_array_equal(v2(x, y)[1], 3 * y)
    np.testing.assert_array_equal(v1(x, y)[1], 2 * y)
    assert v1.library_sha256 != v2.library_sha256
