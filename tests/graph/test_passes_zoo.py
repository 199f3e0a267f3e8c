"""optimize() on every zoo model imported from PyTorch: outputs unchanged (relative error
<= 1e-4 against the unoptimized graph, both run by the reference executor), no more nodes
than before, signature (symbolic shapes included) kept, and no BatchNormalization left in
the convolutional networks."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.graph.ir import Graph
from tessera.graph.passes import optimize
from tessera.graph.reference import run_reference

MODELS = ("resnet50", "mobilenet_v2", "bert_base", "gpt2", "vit_b16", "minilm")
CONV_NETS = ("resnet50", "mobilenet_v2")


def _import(name: str) -> tuple[Graph, dict[str, np.ndarray]]:
    from tessera.frontend import import_torch
    from tessera.models import get_model

    m = get_model(name)
    g = import_torch(m.module, m.example_inputs, input_names=m.input_names, dynamic_axes=m.dynamic_axes)
    feeds = {n: t.detach().cpu().numpy() for n, t in zip(g.inputs, m.example_inputs, strict=True)}
    return g, feeds


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_optimize_zoo_model(name: str) -> None:
    g, feeds = _import(name)
    text = str(g)
    opt = optimize(g)
    assert str(g) == text, "optimize mutated its input graph"
    assert opt.inputs == g.inputs and opt.outputs == g.outputs
    assert [opt.types[v] for v in opt.inputs + opt.outputs] == [g.types[v] for v in g.inputs + g.outputs]
    assert len(opt.nodes) <= len(g.nodes)
    if name in CONV_NETS:
        assert "BatchNormalization" not in opt.op_histogram()
        assert opt.op_histogram().get("Conv", 0) == g.op_histogram().get("Conv", 0)

    ref, got = run_reference(g, feeds), run_reference(opt, feeds)
    for out in g.outputs:
        r, o = ref[out].astype(np.float64), got[out].astype(np.float64)
        assert o.shape == r.shape and got[out].dtype == ref[out].dtype
        err = float(np.max(np.abs(o - r))) / max(float(np.max(np.abs(r))), 1e-12)
        assert err <= 1e-4, f"{name} output {out!r}: relative error {err:.2e}"
