"""Host fallback (tessera.segmented): operators the compiler cannot compile statically run on the
host with their reference implementation between compiled segments; segments whose shapes depend
on their outputs are compiled per shape signature. Results are checked against the reference
executor (integer outputs exactly, floats to 1e-6 relative)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import tessera
from tessera import segmented
from tessera.compiler import kernel_profile
from tessera.errors import CompileError, InputShapeError, TesseraError
from tessera.graph.ir import Graph
from tessera.graph.reference import run_reference
from tessera.runtime import CompiledModel, save_artifact
from tessera.segmented import HostFallbackSaveError, HostFallbackWarning, SegmentedModel
from tests.compiler.helpers import GB

RTOL = 1e-6

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _compile(g: Graph) -> tuple[object, list[str]]:
    """The compiled model and the host-fallback warnings its compile gave."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = tessera.compile(g)
    return model, [str(w.message) for w in record if issubclass(w.category, HostFallbackWarning)]


def _check(model: object, g: Graph, *inputs: np.ndarray) -> None:
    want = run_reference(g, list(inputs))
    got = model(*inputs)  # type: ignore[operator]
    assert len(got) == len(g.outputs)
    for name, out in zip(g.outputs, got, strict=True):
        ref = want[name]
        assert out.dtype == ref.dtype and out.shape == ref.shape, (name, out.dtype, out.shape, ref.dtype, ref.shape)
        if ref.dtype.kind == "f":
            np.testing.assert_allclose(out, ref, rtol=RTOL, err_msg=name)
        else:
            np.testing.assert_array_equal(out, ref, err_msg=name)


def _masked_values() -> Graph:
    """x[relu(x) > 0] as GatherND over NonZero's indices, scaled; plus a static branch."""
    b = GB("masked")
    x = b.input("x", (6, 5))
    r = b.op("Relu", [x])
    nz = b.op("NonZero", [r], name="nz")
    idx = b.op("Transpose", [nz], perm=[1, 0])
    vals = b.op("GatherND", [x, idx])
    scaled = b.op("Mul", [vals, b.const("two", np.array(2.0, np.float32))])
    total = b.op("ReduceSum", [scaled], keepdims=0)
    e = b.op("Exp", [x])  # independent of NonZero: compiled at compile time
    return b.done(scaled, total, e, idx)


def _inputs(positives: int, seed: int = 0) -> np.ndarray:
    """A 6x5 input with exactly ``positives`` positive entries."""
    rng = np.random.default_rng(seed)
    x = -rng.uniform(0.5, 2.0, 30).astype(np.float32)
    x[rng.permutation(30)[:positives]] *= -1
    return x.reshape(6, 5)


def test_nonzero_then_compiled_ops_recompile_per_data_dependent_shape() -> None:
    g = _masked_values()
    model, msgs = _compile(g)
    assert isinstance(model, SegmentedModel)
    assert model.step_kinds == ["compiled", "host", "lazy"]
    assert len(model.compiled_models()) == 1  # the static segment only, before any call
    with warnings.catch_warnings():
        warnings.simplefilter("error", HostFallbackWarning)  # told once, at compile time
        for positives in (7, 12, 7, 0):
            _check(model, g, _inputs(positives, seed=positives))
    lazy = model.steps[2]
    signatures = [dict(zip(lazy.graph.inputs, key, strict=True)) for key in lazy.models]
    assert sorted(sig["nonzero2_0"] for sig in signatures) == [(2, 0), (2, 7), (2, 12)]  # one compile per count
    assert all(sig["x"] == (6, 5) for sig in signatures)
    assert len(model.compiled_models()) == 4
    assert len(msgs) == 1 and "NonZero 'nz' (data-dependent output shape)" in msgs[0]


def test_past_the_signature_limit_a_lazy_segment_runs_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segmented, "MAX_SHAPE_SIGNATURES", 2)
    g = _masked_values()
    model, _ = _compile(g)
    lazy = model.steps[2]  # type: ignore[attr-defined]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for positives in (3, 4, 5, 6, 3):
            _check(model, g, _inputs(positives, seed=positives))
    msgs = [str(w.message) for w in record if issubclass(w.category, HostFallbackWarning)]
    assert len(msgs) == 1 and "compiled for 2 shape signatures" in msgs[0], msgs
    assert len(lazy.models) == 2 and lazy.host_runs == 2


def test_kernel_profile_covers_every_compiled_segment() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HostFallbackWarning)
        model = tessera.compile(_masked_values(), profile=True)
    for positives in (4, 9):
        model(_inputs(positives))
    prof = kernel_profile(model)
    segments = [name.split(":")[0] for name, _ in prof]
    assert segments.count("masked.seg0") >= 1 and segments.count("masked.seg2") >= 2, prof  # 2 shapes
    assert all(t >= 0.0 for _, t in prof) and any(t > 0.0 for _, t in prof)


def test_model_without_host_ops_compiles_as_before() -> None:
    b = GB("plain")
    x = b.input("x", (4, 5))
    g = b.done(b.op("Exp", [b.op("Relu", [x])]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = tessera.compile(g)
    assert type(model) is CompiledModel and hasattr(model, "compilation")


def _dropout_graph(shape: tuple[int, ...] = (8, 16), seed: int | None = 3) -> Graph:
    b = GB("dropout")
    x = b.input("x", shape)
    ratio = b.const("ratio", np.array(0.25, np.float32))
    training = b.const("training", np.array(True))
    e = b.op("Exp", [x])
    attrs = {} if seed is None else {"seed": seed}
    y = b.op("Dropout", [e, ratio, training], n_out=2, name="drop", **attrs)
    z = b.op("Mul", [y, x])
    return b.done(z, "dropout2_1")


def test_dropout_training_mode_matches_the_reference() -> None:
    g = _dropout_graph()
    model, msgs = _compile(g)
    assert isinstance(model, SegmentedModel) and model.step_kinds == ["compiled", "host", "compiled"]
    assert len(msgs) == 1
    assert "1 operator(s) run on the host" in msgs[0] and "Dropout 'drop' (training mode (a random mask)" in msgs[0]
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    _check(model, g, x)
    _, mask = model(x)
    assert mask.dtype == np.bool_ and 0.5 < mask.mean() < 0.95  # a seeded mask (ratio 0.25), not all ones
    np.testing.assert_array_equal(model(x)[1], mask)  # the seed makes the mask reproducible, as the reference


def test_host_op_inside_a_lazy_segment() -> None:
    # Dropout's input shape depends on NonZero, so it is only found to need the host when its
    # segment is compiled for concrete shapes (the segment itself becomes host + compiled parts).
    b = GB("nested")
    x = b.input("x", (6, 5))
    nz = b.op("NonZero", [x], name="nz")
    f = b.op("Cast", [nz], to=tessera.graph.dtypes.DType.float32)
    ratio = b.const("ratio", np.array(0.5, np.float32))
    d = b.op("Dropout", [f, ratio, b.const("training", np.array(True))], name="drop", seed=0)
    g = b.done(b.op("Add", [d, f]))
    model, msgs = _compile(g)
    assert isinstance(model, SegmentedModel) and model.step_kinds == ["host", "lazy"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _check(model, g, _inputs(9))
    inner = [str(w.message) for w in record if issubclass(w.category, HostFallbackWarning)]
    assert len(inner) == 1 and "Dropout 'drop'" in inner[0]
    (segment,) = model.steps[1].models.values()
    assert isinstance(segment, SegmentedModel) and segment.step_kinds == ["compiled", "host", "compiled"]


def test_inputs_are_checked() -> None:
    model, _ = _compile(_masked_values())
    with pytest.raises(InputShapeError, match=r"input 'x': expected shape \(6, 5\), got \(5, 6\)"):
        model(np.zeros((5, 6), np.float32))  # type: ignore[operator]


def test_saving_raises_and_writes_nothing(tmp_path: Path) -> None:
    model, _ = _compile(_masked_values())
    assert isinstance(model, SegmentedModel)
    assert issubclass(HostFallbackSaveError, TesseraError)
    path = tmp_path / "masked.tsa"
    with pytest.raises(HostFallbackSaveError, match=r"'masked' cannot be saved.*NonZero 'nz'.*only NumPy"):
        model.save(path)
    with pytest.raises(HostFallbackSaveError, match="NonZero 'nz'"):
        save_artifact(model, path)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_host_fallback_off_keeps_the_compile_error() -> None:
    with pytest.raises(CompileError, match="data-dependent shape"):
        tessera.compile(_masked_values(), host_fallback=False)


def test_foreign_target_keeps_the_compile_error() -> None:
    # a host fallback needs to run the compiled segments in this process
    with pytest.raises(CompileError, match="Dropout node 'drop'"):
        tessera.compile(_dropout_graph(), target="arm-neon")
