"""Loading ONNX's backend test cases: node tests (generated from the generators that ship
in the onnx wheel) and the model tests whose data ships with it."""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import onnx
from onnx import ModelProto, numpy_helper

DATA_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
# Model-test kinds whose data ships with onnx. "real" is left out: those models must be
# downloaded from the ONNX model zoo, and tests run without network access.
MODEL_KINDS = ("simple", "pytorch-converted", "pytorch-operator", "light")


@dataclass
class Case:
    """One conformance test: a model and its (inputs, expected outputs) data sets."""

    id: str
    kind: str  # "node" or a model-test kind
    model_path: str | None = None
    model_proto: ModelProto | None = None
    data: list[tuple[list[np.ndarray], list[np.ndarray]]] = field(default_factory=list)
    data_dir: str | None = None
    rtol: float = 1e-3
    atol: float = 1e-7

    @property
    def model(self) -> ModelProto:
        if self.model_proto is None:
            assert self.model_path is not None
            self.model_proto = onnx.load(self.model_path)
        return self.model_proto


def _as_array(x: object) -> np.ndarray:
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x  # type: ignore[return-value]


@cache
def node_cases() -> list[Case]:
    """ONNX's node tests, generated in memory from ``onnx.backend.test.case.node``."""
    from onnx.backend.test.case.node import collect_testcases

    # The generators draw inputs from NumPy's global RNG: seed it so every run (and every
    # xdist worker) tests the same data, then restore the caller's RNG state.
    state = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the generators overflow casts etc. on purpose
            raw = collect_testcases(None)
    finally:
        np.random.set_state(state)
    cases = []
    for tc in raw:
        data = [([_as_array(x) for x in ins], [_as_array(x) for x in outs]) for ins, outs in tc.data_sets]
        cases.append(Case(tc.name, "node", model_proto=tc.model, data=data, rtol=tc.rtol, atol=tc.atol))
    return sorted(cases, key=lambda c: c.id)


def _load_value(path: str, type_proto: onnx.TypeProto) -> object:
    with open(path, "rb") as f:
        content = f.read()
    which = type_proto.WhichOneof("value")
    if which == "sequence_type":
        seq = onnx.SequenceProto()
        seq.ParseFromString(content)
        return numpy_helper.to_list(seq)
    if which == "optional_type":
        opt = onnx.OptionalProto()
        opt.ParseFromString(content)
        return numpy_helper.to_optional(opt)
    t = onnx.TensorProto()
    t.ParseFromString(content)
    return numpy_helper.to_array(t)


def load_data_sets(case: Case) -> list[tuple[list[object], list[object]]]:
    """The data sets of an on-disk model test (``test_data_set_*/input_i.pb``...)."""
    if case.data:
        return case.data  # type: ignore[return-value]
    assert case.data_dir is not None
    model = case.model
    if case.kind == "light":
        return [_light_data(case)]
    out = []
    for d in sorted(glob.glob(os.path.join(case.data_dir, "test_data_set*"))):
        n_in = len(glob.glob(os.path.join(d, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(d, "output_*.pb")))
        ins = [_load_value(os.path.join(d, f"input_{i}.pb"), model.graph.input[i].type) for i in range(n_in)]
        outs = [_load_value(os.path.join(d, f"output_{i}.pb"), model.graph.output[i].type)
                for i in range(n_out)]
        out.append((ins, outs))
    return out


def _light_data(case: Case) -> tuple[list[object], list[object]]:
    """Inputs for a 'light' model as ONNX's runner makes them (``arange(n)/n`` over the
    declared shape, unknown dims as 1); expected outputs ship next to the model."""
    model = case.model
    inits = {t.name for t in model.graph.initializer}
    ins = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        ins.append((np.arange(n).reshape(shape) / n).astype(np.float32))
    prefix = os.path.splitext(case.model_path or "")[0]
    outs = [_load_value(f"{prefix}_output_{i}.pb", vi.type) for i, vi in enumerate(model.graph.output)]
    return ins, outs


@cache
def model_cases() -> list[Case]:
    """ONNX's model tests whose data ships with the onnx wheel (see MODEL_KINDS)."""
    cases = []
    for kind in MODEL_KINDS:
        kind_dir = os.path.join(DATA_DIR, kind)
        if kind == "light":
            for path in sorted(glob.glob(os.path.join(kind_dir, "light_*.onnx"))):
                if path.endswith(".onnx") and "_output_" not in path:
                    name = "test_" + os.path.basename(path)[len("light_"):-len(".onnx")]
                    rtol = 2e-3 if "densenet" in name else 1e-3
                    cases.append(Case(f"{kind}/{name}", kind, model_path=path, data_dir=kind_dir, rtol=rtol))
            continue
        for name in sorted(os.listdir(kind_dir)):
            case_dir = os.path.join(kind_dir, name)
            model_path = os.path.join(case_dir, "model.onnx")
            if os.path.isfile(model_path):
                cases.append(Case(f"{kind}/{name}", kind, model_path=model_path, data_dir=case_dir))
    return cases
