"""Zoo models on the NPU family (slow): ResNet-50, MobileNetV2 and BERT-base compile for every generation
from the description files with the issue's MAC-utilization targets (batch 1, int8, utilization over the
conv/matmul time), and run correctly in the functional simulator.

Correctness metrics: bf16 relative L2 error <= 2e-2 vs the float reference; int8 cosine similarity >= 0.99
(MiniLM with its real weights; the random-weight models are checked the same way)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from npu_graphs import cosine, rel_err

from tessera.api import load_model
from tessera.graph.passes import optimize
from tessera.graph.passes.quantize import quantize
from tessera.graph.reference import run_reference
from tessera.graph.specialize import specialize
from tessera.models import get_model
from tessera.npu import list_descriptions
from tessera.targets.npu_target import compile_graph_npu

pytestmark = pytest.mark.slow
GENS = ("npu-gen1", "npu-gen2", "npu-gen3")
# (model, generation) -> required MAC utilization over conv/matmul time (issue 5)
TARGETS = {("resnet50", "npu-gen1"): 0.65, ("resnet50", "npu-gen2"): 0.80, ("resnet50", "npu-gen3"): 0.60,
           ("bert_base", "npu-gen1"): 0.70, ("bert_base", "npu-gen2"): 0.85, ("bert_base", "npu-gen3"): 0.65}


@functools.cache
def _zoo(name: str) -> tuple:
    zm = get_model(name)
    g = load_model(name)
    feeds = [t.numpy() for t in zm.example_inputs]
    g = optimize(specialize(g, {n: f.shape for n, f in zip(g.inputs, feeds, strict=True)}))
    return g, feeds


@functools.cache
def _plan(name: str):  # noqa: ANN202
    g, feeds = _zoo(name)
    return quantize(g, [feeds])


@pytest.mark.parametrize("model", ["resnet50", "bert_base", "mobilenet_v2"])
def test_zoo_compiles_for_every_generation_and_meets_utilization(model: str) -> None:
    g, _ = _zoo(model)
    assert set(GENS) <= set(list_descriptions())
    for gen in GENS:
        rep = compile_graph_npu(g, gen, "int8", plan=_plan(model), optimize=False).report()
        print(f"{model} {gen}: {rep.matrix_utilization:.1%} over conv/matmul, {rep.end_to_end_utilization:.1%} "
              f"end to end, {rep.total_cycles:,} cycles, sim {rep.sim_seconds:.2f} s")
        assert rep.layers and rep.total_cycles > 0
        assert rep.sim_seconds < 120
        assert rep.matrix_utilization >= TARGETS.get((model, gen), 0.0), (model, gen, rep.matrix_utilization)


def _run(model: str, gen: str, precision: str) -> dict[str, tuple[float, float]]:
    g, feeds = _zoo(model)
    ref = run_reference(g, feeds)
    cm = compile_graph_npu(g, gen, precision, plan=_plan(model) if precision == "int8" else None, optimize=False)
    out = cm.run_dict(feeds)
    return {o: (rel_err(out[o], ref[o]), cosine(out[o], ref[o])) for o in g.outputs}


@pytest.mark.parametrize("gen", GENS)
def test_minilm_int8_embeddings_with_real_weights(gen: str) -> None:
    ((err, cos),) = _run("minilm", gen, "int8").values()
    assert cos >= 0.99, (gen, cos, err)


# one functional run per model family and precision keeps CI short (BERT-base's numerics: see MiniLM, the
# same encoder at 6 layers, int8 on every generation above and bf16 here)
@pytest.mark.parametrize(("model", "gen", "precision"), [
    ("resnet50", "npu-gen1", "int8"), ("mobilenet_v2", "npu-gen2", "bf16"), ("mobilenet_v2", "npu-gen1", "int8"),
    ("minilm", "npu-gen3", "bf16"),
])
def test_zoo_outputs_match_the_float_reference(model: str, gen: str, precision: str) -> None:
    for name, (err, cos) in _run(model, gen, precision).items():
        if precision == "bf16":
            assert err <= 2e-2, (model, gen, name, err)
        else:
            assert cos >= 0.99, (model, gen, name, cos)
    assert np.isfinite(err)
