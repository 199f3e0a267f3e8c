"""Graph IR core: symbolic dims, tensor types, verifier, text form, save/load, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.errors import GraphError, InputCountError, InputDtypeError, InputShapeError, ModelLoadError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.reference import run_reference
from tessera.graph.serialize import load_graph, save_graph
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.symbolic import Sym, evaluate, parse_dim, substitute, symbol_name
from tessera.graph.tensor_type import TensorType
from tessera.graph.verify import verify

batch, seq = Sym.var("batch"), Sym.var("seq")


def test_symbolic_arithmetic_normalizes() -> None:
    assert seq * 2 - seq - seq == 0
    assert isinstance(seq - seq + 3, int)
    assert (seq * 4) // 2 == seq * 2
    assert str(batch * seq * 3 + 1) == "batch*seq*3+1"
    assert evaluate((seq + 1) // 2, {"seq": 7}) == 4
    assert evaluate((seq + 1) % 3, {"seq": 7}) == 2
    assert substitute(seq * 2 + batch, {"seq": 5}) == batch + 10
    assert symbol_name(batch) == "batch" and symbol_name(batch * 2) is None
    with pytest.raises(TypeError):
        _ = seq // batch


@pytest.mark.parametrize("expr", [batch, seq * 2, (seq + 1) // 2, batch * seq - 3, (seq - 1) % 4 + 1])
def test_dim_text_round_trip(expr: Sym) -> None:
    assert parse_dim(str(expr)) == expr


def test_parse_dim_rejects_code() -> None:
    with pytest.raises(ValueError):
        parse_dim("__import__('os')")


def test_tensor_type_text_round_trip() -> None:
    t = TensorType(DType.bfloat16, (batch, (seq + 1) // 2, 768))
    assert str(t) == "bf16[batch,(seq+1)//2,768]"
    assert TensorType.parse(str(t)) == t
    assert t.numel == batch * ((seq + 1) // 2) * 768
    assert TensorType.parse("bool[]").shape == ()


def _small_graph() -> Graph:
    g = Graph("small")
    g.add_input("x", TensorType(DType.float32, (batch, 4)))
    g.add_constant("w", np.arange(4, dtype=np.float32))
    g.nodes += [Node("Add", ["x", "w"], ["y"], name="add"), Node("Relu", ["y"], ["z"], name="relu")]
    g.outputs = ["z"]
    return infer_shapes(g)


def test_infer_and_run() -> None:
    g = _small_graph()
    verify(g)
    assert g.types["z"] == TensorType(DType.float32, (batch, 4))
    x = np.array([[-5, -1, 0, 1], [1, 1, 1, 1]], np.float32)
    np.testing.assert_array_equal(run_reference(g, [x])["z"], np.maximum(x + np.arange(4), 0))


def test_text_form_is_readable() -> None:
    text = str(_small_graph())
    assert "graph small(%x: f32[batch,4]) -> (%z: f32[batch,4])" in text
    assert "%y: f32[batch,4] = Add(%x, %w)  # add" in text


def test_verifier_rejects_double_assignment() -> None:
    g = _small_graph()
    g.nodes[1].outputs = ["y"]
    with pytest.raises(GraphError, match="assigned more than once"):
        verify(g)


def test_verifier_rejects_cycle_and_undefined() -> None:
    g = _small_graph()
    g.nodes[0].inputs = ["x", "z"]  # z is produced later: a cycle
    with pytest.raises(GraphError, match="before it is defined"):
        verify(g)


def test_verifier_rejects_wrong_type() -> None:
    g = _small_graph()
    g.types["z"] = TensorType(DType.float32, (batch, 5))
    with pytest.raises(GraphError, match="rule gives"):
        verify(g)


def test_verifier_rejects_unknown_attribute() -> None:
    g = _small_graph()
    g.nodes[1].attrs["alpha"] = 1.0
    with pytest.raises(GraphError, match="unknown attribute 'alpha'"):
        verify(g)


def test_save_load_round_trips_exactly(tmp_path) -> None:
    g = _small_graph()
    g.add_constant("bf", np.array([1.5, -2.25], dtype=DType.bfloat16.np))
    g.nodes.append(Node("Add", ["bf", "bf"], ["bf2"], name="weird name/with 'quotes'"))
    g.outputs.append("bf2")
    g.metadata["source"] = "test"
    infer_shapes(g)
    save_graph(g, tmp_path / "g.tsr")
    h = load_graph(tmp_path / "g.tsr")
    assert str(h) == str(g)
    assert h.types == g.types and h.metadata == g.metadata
    for k, v in g.constants.items():
        assert h.constants[k].dtype == v.dtype and h.constants[k].tobytes() == v.tobytes()
    assert [(n.op, n.inputs, n.outputs, n.name) for n in h.nodes] == [
        (n.op, n.inputs, n.outputs, n.name) for n in g.nodes]


def test_load_corrupt_graph(tmp_path) -> None:
    p = tmp_path / "bad.tsr"
    p.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_graph(p)


def test_input_checks() -> None:
    g = _small_graph()
    with pytest.raises(InputCountError, match="expects 1 input"):
        run_reference(g, [])
    with pytest.raises(InputDtypeError, match="float32"):
        run_reference(g, [np.zeros((2, 4), np.int64)])
    with pytest.raises(InputShapeError, match="axis 1"):
        run_reference(g, [np.zeros((2, 5), np.float32)])
    with pytest.raises(InputCountError, match="unknown"):
        run_reference(g, {"x": np.zeros((2, 4), np.float32), "q": np.zeros(1)})


def test_symbol_bound_consistently_across_inputs() -> None:
    g = Graph("two")
    g.add_input("a", TensorType(DType.float32, (batch, 3)))
    g.add_input("b", TensorType(DType.float32, (batch, 3)))
    g.nodes.append(Node("Add", ["a", "b"], ["c"], name="add"))
    g.outputs = ["c"]
    infer_shapes(g)
    with pytest.raises(InputShapeError, match="'batch'=2 elsewhere"):
        run_reference(g, [np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32)])
