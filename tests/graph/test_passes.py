"""Graph passes: each rewrite checked against a hand-built expected graph and for unchanged
numerics (reference executor before vs after, rtol 1e-5)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from tessera.errors import GraphError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.passes import (
    DEFAULT_PASSES,
    PassLog,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    fold_batchnorm,
    fold_constants,
    optimize,
    simplify_reshapes,
)
from tessera.graph.reference import run_reference
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.symbolic import Sym
from tessera.graph.tensor_type import TensorType
from tessera.graph.verify import verify

batch, seq = Sym.var("batch"), Sym.var("seq")
F32 = DType.float32
RNG = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def build(
    inputs: dict[str, TensorType],
    consts: dict[str, np.ndarray],
    nodes: Sequence[Node],
    outputs: Sequence[str],
    name: str = "g",
) -> Graph:
    g = Graph(name)
    for k, t in inputs.items():
        g.add_input(k, t)
    for k, v in consts.items():
        g.add_constant(k, v)
    g.nodes = [n.clone() for n in nodes]
    g.outputs = list(outputs)
    infer_shapes(g)
    verify(g)
    return g


def N(op: str, inputs: list[str], outputs: list[str], **attrs: object) -> Node:  # noqa: N802
    return Node(op, inputs, outputs, dict(attrs), name=outputs[0])


def canon(g: Graph) -> str:
    """Text form with constant lines sorted (their order is not meaningful)."""
    lines = str(g).splitlines()
    consts = sorted(line for line in lines if line.startswith("  const "))
    rest = [line for line in lines if not line.startswith("  const ")]
    return "\n".join([rest[0], *consts, *rest[1:]])


def feeds_for(g: Graph, env: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    env = env or {"batch": 3, "seq": 5}
    return {i: f32(*g.types[i].concrete(env)) if g.types[i].dtype == F32 else
            np.ones(g.types[i].concrete(env), g.types[i].dtype.np) for i in g.inputs}


def assert_same_numerics(before: Graph, after: Graph, env: dict[str, int] | None = None) -> None:
    feeds = feeds_for(before, env)
    ref, got = run_reference(before, feeds), run_reference(after, feeds)
    assert list(got) == list(ref) == before.outputs
    for k in ref:
        assert got[k].shape == ref[k].shape and got[k].dtype == ref[k].dtype
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6)


def run_pass(p: Callable[[Graph], Graph], g: Graph) -> Graph:
    """Apply a pass, check it left its input untouched and produced a valid graph."""
    text, consts, types = str(g), dict(g.constants), dict(g.types)
    snap = {k: v.copy() for k, v in g.constants.items()}
    out = p(g)
    assert out is not g
    assert str(g) == text and g.types == types and g.constants.keys() == consts.keys()
    for k, v in g.constants.items():
        assert v is consts[k] and np.array_equal(v, snap[k])
    verify(out)
    assert out.outputs == g.outputs and all(out.types[o] == g.types[o] for o in g.outputs)
    return out


# ---- eliminate_dead_code --------------------------------------------------------------------


def test_dce_removes_unused_nodes_constants_and_types() -> None:
    x = TensorType(F32, (batch, 4))
    g = build(
        {"x": x, "unused_in": x},
        {"w": f32(4), "dead_w": f32(4)},
        [N("Add", ["x", "w"], ["a"]), N("Mul", ["a", "dead_w"], ["dead"]), N("Relu", ["dead"], ["dead2"]),
         N("Relu", ["a"], ["y"])],
        ["y"],
    )
    out = run_pass(eliminate_dead_code, g)
    expected = build({"x": x, "unused_in": x}, {"w": g.constants["w"]},
                     [N("Add", ["x", "w"], ["a"]), N("Relu", ["a"], ["y"])], ["y"])
    assert canon(out) == canon(expected)
    assert set(out.types) == {"x", "unused_in", "w", "a", "y"}
    assert_same_numerics(g, out)


def test_dce_keeps_multi_output_node_with_one_used_output() -> None:
    g = build({"x": TensorType(F32, (6, 4))}, {"sp": i64(2, 4)},
              [N("Split", ["x", "sp"], ["p", "q"]), N("Relu", ["q"], ["y"])], ["y"])
    out = run_pass(eliminate_dead_code, g)
    assert [n.op for n in out.nodes] == ["Split", "Relu"] and "p" in out.types
    assert_same_numerics(g, out)


# ---- fold_constants -------------------------------------------------------------------------


def test_fold_constants_evaluates_constant_subgraph() -> None:
    a, b = f32(4), f32(4)
    x = TensorType(F32, (batch, 4))
    g = build({"x": x}, {"a": a, "b": b},
              [N("Add", ["a", "b"], ["ab"]), N("Relu", ["ab"], ["r"]), N("Mul", ["x", "r"], ["y"])], ["y"])
    out = run_pass(fold_constants, g)
    assert [n.op for n in out.nodes] == ["Mul"] and out.nodes[0].inputs == ["x", "r"]
    np.testing.assert_allclose(out.constants["r"], np.maximum(a + b, 0), rtol=1e-6)
    out = run_pass(eliminate_dead_code, out)
    expected = build({"x": x}, {"r": np.maximum(a + b, 0)}, [N("Mul", ["x", "r"], ["y"])], ["y"])
    assert canon(out) == canon(expected)
    assert_same_numerics(g, out)


def test_fold_constants_leaves_non_constant_inputs_alone() -> None:
    g = build({"x": TensorType(F32, (batch, 4))}, {"w": f32(4)},
              [N("Add", ["x", "w"], ["a"]), N("Relu", ["a"], ["y"])], ["y"])
    out = run_pass(fold_constants, g)
    assert canon(out) == canon(g)


def test_fold_constants_folds_known_shape_arithmetic_keeps_symbolic() -> None:
    x = TensorType(F32, (batch, 3, 4))
    g = build(
        {"x": x},
        {"i0": np.array(0), "i2": np.array(2), "ax": i64(0), "m1": i64(-1)},
        [
            N("Shape", ["x"], ["s"]),
            N("Gather", ["s", "i2"], ["d2"]),  # 4: static
            N("Unsqueeze", ["d2", "ax"], ["d2u"]),
            N("Concat", ["m1", "d2u"], ["t1"], axis=0),  # [-1, 4]
            N("Reshape", ["x", "t1"], ["y1"]),
            N("Gather", ["s", "i0"], ["d0"]),  # batch: symbolic, stays
            N("Unsqueeze", ["d0", "ax"], ["d0u"]),
            N("Concat", ["d0u", "m1"], ["t2"], axis=0),  # [batch, -1]
            N("Reshape", ["x", "t2"], ["y2"]),
        ],
        ["y1", "y2"],
    )
    out = run_pass(eliminate_dead_code, run_pass(fold_constants, g))
    assert [n.op for n in out.nodes] == ["Shape", "Reshape", "Gather", "Unsqueeze", "Concat", "Reshape"]
    np.testing.assert_array_equal(out.constants["t1"], [-1, 4])
    assert out.types["y1"].shape == (batch * 3, 4) and out.types["y2"].shape == (batch, 12)
    assert_same_numerics(g, out)


def test_fold_constants_static_shape_of_activation() -> None:
    g = build({"x": TensorType(F32, (2, 3, 4))}, {},
              [N("Relu", ["x"], ["r"]), N("Shape", ["r"], ["s"]), N("Cast", ["s"], ["y"], to=DType.float32)],
              ["y"])
    out = run_pass(fold_constants, g)
    assert out.nodes[0].op == "Relu" and len(out.nodes) == 1
    np.testing.assert_array_equal(out.constants["y"], np.array([2, 3, 4], np.float32))
    out = run_pass(eliminate_dead_code, out)
    assert out.nodes == [] and out.inputs == ["x"]
    assert_same_numerics(g, out)


def test_fold_constants_size_limit() -> None:
    g = build({"x": TensorType(F32, (1024, 1024, 2))}, {"shape": i64(1024, 1024, 2)},
              [N("ConstantOfShape", ["shape"], ["big"], value=np.array([1.5], np.float32)),
               N("Add", ["x", "big"], ["y"])], ["y"])
    out = run_pass(fold_constants, g)  # 8 MiB from 24 bytes: not materialized
    assert [n.op for n in out.nodes] == ["ConstantOfShape", "Add"]
    out = run_pass(lambda h: fold_constants(h, size_limit=16 << 20), g)
    assert [n.op for n in out.nodes] == ["Add"] and out.constants["big"].shape == (1024, 1024, 2)
    assert float(out.constants["big"][5, 7, 1]) == 1.5


def test_fold_constants_removes_identity_and_keeps_output_names() -> None:
    x = TensorType(F32, (batch, 4))
    g = build({"x": x}, {},
              [N("Relu", ["x"], ["a"]), N("Identity", ["a"], ["b"]), N("Neg", ["b"], ["c"]),
               N("Identity", ["c"], ["y"]), N("Identity", ["x"], ["z"])],
              ["y", "z"])
    out = run_pass(fold_constants, g)
    # y keeps its name (Neg now produces it); z is a graph input passed through: kept.
    expected = build({"x": x}, {}, [N("Relu", ["x"], ["a"]), Node("Neg", ["a"], ["y"], name="c"),
                                    N("Identity", ["x"], ["z"])], ["y", "z"])
    assert canon(out) == canon(expected)
    assert "b" not in out.types and "c" not in out.types
    assert_same_numerics(g, out)


def test_fold_constants_removes_inference_dropout_only() -> None:
    x = TensorType(F32, (batch, 4))
    g = build({"x": x}, {"ratio": np.array(0.5, np.float32), "train": np.array(True)},
              [N("Dropout", ["x", "ratio"], ["d", "mask"]), N("Relu", ["d"], ["y"])], ["y"])
    out = run_pass(fold_constants, g)
    assert [(n.op, n.inputs) for n in out.nodes] == [("Relu", ["x"])] and "mask" not in out.types
    assert_same_numerics(g, out)
    # A used mask or training mode keeps the node.
    g2 = build({"x": x}, {"ratio": np.array(0.5, np.float32), "train": np.array(True)},
               [N("Dropout", ["x", "ratio", "train"], ["d"]), N("Relu", ["d"], ["y"])], ["y"])
    assert [n.op for n in run_pass(fold_constants, g2).nodes] == ["Dropout", "Relu"]
    g3 = build({"x": x}, {}, [N("Dropout", ["x"], ["d", "mask"]), N("Relu", ["d"], ["y"])], ["y", "mask"])
    assert [n.op for n in run_pass(fold_constants, g3).nodes] == ["Dropout", "Relu"]


# ---- eliminate_common_subexpressions ---------------------------------------------------------


def test_cse_merges_nodes_and_constants() -> None:
    x = TensorType(F32, (batch, 4))
    w = f32(4)
    g = build(
        {"x": x},
        {"w1": w, "w2": w.copy(), "w3": w + 1},
        [N("Add", ["x", "w1"], ["a1"]), N("Add", ["x", "w2"], ["a2"]), N("Add", ["x", "w3"], ["a3"]),
         N("Transpose", ["a1"], ["t1"], perm=[1, 0]), N("Transpose", ["a2"], ["t2"], perm=[1, 0]),
         N("Mul", ["t1", "t2"], ["m"]), N("Mul", ["a3", "a3"], ["y2"]), N("Relu", ["m"], ["y"])],
        ["y", "y2"],
    )
    out = run_pass(eliminate_common_subexpressions, g)
    expected = build(
        {"x": x}, {"w1": w, "w3": w + 1},
        [N("Add", ["x", "w1"], ["a1"]), N("Add", ["x", "w3"], ["a3"]),
         N("Transpose", ["a1"], ["t1"], perm=[1, 0]), N("Mul", ["t1", "t1"], ["m"]),
         N("Mul", ["a3", "a3"], ["y2"]), N("Relu", ["m"], ["y"])],
        ["y", "y2"],
    )
    assert canon(out) == canon(expected)
    assert_same_numerics(g, out)


def test_cse_compares_attributes_including_tensors() -> None:
    s = TensorType(DType.int64, (2,))
    v1, v2 = np.array([1.0], np.float32), np.array([2.0], np.float32)
    g = build({"s": s}, {},
              [N("ConstantOfShape", ["s"], ["c1"], value=v1), N("ConstantOfShape", ["s"], ["c2"], value=v1.copy()),
               N("ConstantOfShape", ["s"], ["c3"], value=v2), N("Sum", ["c1", "c2", "c3"], ["y"])], ["y"])
    out = run_pass(eliminate_common_subexpressions, g)
    assert [(n.op, n.inputs) for n in out.nodes] == [
        ("ConstantOfShape", ["s"]), ("ConstantOfShape", ["s"]), ("Sum", ["c1", "c1", "c3"])]
    feeds = {"s": i64(2, 3)}
    np.testing.assert_array_equal(run_reference(out, feeds)["y"], np.full((2, 3), 4.0, np.float32))


def test_cse_keeps_distinct_graph_outputs() -> None:
    x = TensorType(F32, (batch, 4))
    g = build({"x": x}, {}, [N("Relu", ["x"], ["y1"]), N("Relu", ["x"], ["y2"])], ["y1", "y2"])
    out = run_pass(eliminate_common_subexpressions, g)
    assert canon(out) == canon(g)


# ---- simplify_reshapes -----------------------------------------------------------------------


def test_reshape_chain_becomes_one_static_reshape() -> None:
    x = TensorType(F32, (2, 3, 4))
    g = build({"x": x}, {"s1": i64(6, 4), "s2": i64(4, -1)},
              [N("Reshape", ["x", "s1"], ["r1"]), N("Reshape", ["r1", "s2"], ["y"])], ["y"])
    out = run_pass(eliminate_dead_code, run_pass(simplify_reshapes, g))
    expected = build({"x": x}, {"y_shape_1": i64(4, 6)}, [N("Reshape", ["x", "y_shape_1"], ["y"])], ["y"])
    assert canon(out) == canon(expected)
    assert_same_numerics(g, out)


def test_reshape_chain_symbolic_and_round_trip_removed() -> None:
    x = TensorType(F32, (batch, seq, 768))
    g = build({"x": x}, {"heads": i64(0, 0, 12, 64), "flat": i64(0, 0, 768)},
              [N("Reshape", ["x", "heads"], ["h"]), N("Reshape", ["h", "flat"], ["f"]), N("Relu", ["f"], ["y"])],
              ["y"])
    out = optimize(g)
    expected = build({"x": x}, {}, [N("Relu", ["x"], ["y"])], ["y"])
    assert canon(out) == canon(expected)
    assert_same_numerics(g, out)


def test_squeeze_unsqueeze_flatten_chain_to_reshape() -> None:
    x = TensorType(F32, (batch, 3, 4))
    g = build({"x": x}, {"ax1": i64(1), "ax3": i64(3)},
              [N("Unsqueeze", ["x", "ax1"], ["u"]), N("Unsqueeze", ["u", "ax3"], ["u2"]),  # [batch,1,3,1,4]
               N("Flatten", ["u2"], ["fl"], axis=1)],  # [batch, 12]
              ["fl"])
    out = run_pass(eliminate_dead_code, run_pass(simplify_reshapes, g))
    assert [n.op for n in out.nodes] == ["Reshape"] and out.nodes[0].inputs[0] == "x"
    assert out.constants[out.nodes[0].inputs[1]].tolist() == [0, 12]
    assert out.types["fl"].shape == (batch, 12)
    assert_same_numerics(g, out)
    # Unsqueeze then Squeeze of the same axis is a no-op.
    g2 = build({"x": x}, {"ax1": i64(1)},
               [N("Unsqueeze", ["x", "ax1"], ["u"]), N("Squeeze", ["u", "ax1"], ["s"]), N("Neg", ["s"], ["y"])],
               ["y"])
    out2 = run_pass(eliminate_dead_code, run_pass(simplify_reshapes, g2))
    assert [(n.op, n.inputs) for n in out2.nodes] == [("Neg", ["x"])]
    assert_same_numerics(g2, out2)


def test_expand_to_same_shape_removed() -> None:
    x = TensorType(F32, (batch, 3))
    g = build({"x": x, "y": x}, {"one": i64(1, 1), "wide": i64(2, 1, 1)},
              [N("Shape", ["y"], ["s"]), N("Expand", ["x", "s"], ["e1"]), N("Expand", ["e1", "one"], ["e2"]),
               N("Expand", ["e2", "wide"], ["e3"]), N("Neg", ["e3"], ["z"])],
              ["z"])
    out = run_pass(eliminate_dead_code, run_pass(simplify_reshapes, g))
    assert [(n.op, n.inputs[0]) for n in out.nodes] == [("Expand", "x"), ("Neg", "e3")]
    assert out.types["z"].shape == (2, batch, 3)
    assert_same_numerics(g, out)


def test_reshape_with_computed_target_is_not_collapsed() -> None:
    g = build({"x": TensorType(F32, (batch, 6)), "shape": TensorType(DType.int64, (2,))}, {"s1": i64(-1, 3, 2)},
              [N("Reshape", ["x", "s1"], ["r1"]), N("Reshape", ["r1", "shape"], ["y"])], ["y"])
    out = run_pass(simplify_reshapes, g)
    assert canon(out) == canon(g)
    # A single Squeeze/Unsqueeze (no chain) stays as it is.
    g2 = build({"x": TensorType(F32, (batch, 1, 6))}, {"a": i64(1)}, [N("Squeeze", ["x", "a"], ["y"])], ["y"])
    assert canon(run_pass(simplify_reshapes, g2)) == canon(g2)


def test_transpose_chains() -> None:
    x = TensorType(F32, (batch, 3, 4, 5))
    g = build({"x": x}, {},
              [N("Transpose", ["x"], ["t1"], perm=[0, 2, 3, 1]), N("Transpose", ["t1"], ["t2"], perm=[0, 2, 1, 3]),
               N("Transpose", ["x"], ["u1"], perm=[0, 2, 3, 1]), N("Transpose", ["u1"], ["u2"], perm=[0, 3, 1, 2]),
               N("Transpose", ["u2"], ["u3"], perm=[0, 1, 2, 3]), N("Add", ["u3", "x"], ["y2"])],
              ["t2", "y2"])
    out = run_pass(eliminate_dead_code, run_pass(simplify_reshapes, g))
    expected = build({"x": x}, {}, [N("Transpose", ["x"], ["t2"], perm=[0, 3, 2, 1]), N("Add", ["x", "x"], ["y2"])],
                     ["t2", "y2"])
    assert canon(out) == canon(expected)
    assert_same_numerics(g, out)


def test_noop_reshape_producing_graph_output_keeps_name() -> None:
    x = TensorType(F32, (batch, 4))
    g = build({"x": x}, {"s": i64(0, 4)}, [N("Relu", ["x"], ["r"]), N("Reshape", ["r", "s"], ["y"])], ["y"])
    out = run_pass(eliminate_dead_code, run_pass(simplify_reshapes, g))
    expected = build({"x": x}, {}, [N("Relu", ["x"], ["y"])], ["y"])
    expected.nodes[0].name = "r"
    assert canon(out) == canon(expected)
    # Reshape of a graph input to a graph output must stay (nothing to rename).
    g2 = build({"x": x}, {"s": i64(0, 4)}, [N("Reshape", ["x", "s"], ["y"])], ["y"])
    assert canon(run_pass(simplify_reshapes, g2)) == canon(g2)


# ---- fold_batchnorm --------------------------------------------------------------------------


def _bn_params(c: int) -> dict[str, np.ndarray]:
    return {"scale": f32(c), "bias": f32(c), "mean": f32(c), "var": np.abs(f32(c)) + 0.5}


@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_batchnorm_into_conv(with_bias: bool) -> None:
    x = TensorType(F32, (batch, 3, 8, 8))
    consts = {"w": f32(6, 3, 3, 3), **_bn_params(6)}
    conv_in = ["x", "w"]
    if with_bias:
        consts["b"] = f32(6)
        conv_in.append("b")
    g = build({"x": x}, consts,
              [N("Conv", conv_in, ["c"], pads=[1, 1, 1, 1]),
               N("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-3),
               N("Relu", ["bn"], ["y"])], ["y"])
    out = run_pass(eliminate_dead_code, run_pass(fold_batchnorm, g))
    assert [(n.op, n.outputs) for n in out.nodes] == [("Conv", ["bn"]), ("Relu", ["y"])]
    assert out.nodes[0].attrs == {"pads": [1, 1, 1, 1]} and "c" not in out.types
    s = consts["scale"].astype(np.float64) / np.sqrt(consts["var"].astype(np.float64) + 1e-3)
    w_new, b_new = (out.constants[i] for i in out.nodes[0].inputs[1:])
    np.testing.assert_allclose(w_new, consts["w"] * s[:, None, None, None], rtol=1e-6)
    b0 = consts["b"] if with_bias else 0
    np.testing.assert_allclose(b_new, (b0 - consts["mean"]) * s + consts["bias"], rtol=1e-5, atol=1e-6)
    assert set(out.constants) == set(out.nodes[0].inputs[1:])
    assert_same_numerics(g, out)


def test_fold_batchnorm_preconditions() -> None:
    x = TensorType(F32, (batch, 3, 8, 8))
    bn_in = ["c", "scale", "bias", "mean", "var"]
    # Conv output also used elsewhere: no fold.
    g = build({"x": x}, {"w": f32(6, 3, 1, 1), **_bn_params(6)},
              [N("Conv", ["x", "w"], ["c"]), N("BatchNormalization", bn_in, ["bn"]), N("Add", ["bn", "c"], ["y"])],
              ["y"])
    assert canon(run_pass(fold_batchnorm, g)) == canon(g)
    # Non-constant weights or BN parameters: no fold.
    p = _bn_params(6)
    g2 = build({"x": x, "w": TensorType(F32, (6, 3, 1, 1))}, p,
               [N("Conv", ["x", "w"], ["c"]), N("BatchNormalization", bn_in, ["y"])], ["y"])
    assert canon(run_pass(fold_batchnorm, g2)) == canon(g2)
    g3 = build({"x": x, "mean": TensorType(F32, (6,))}, {"w": f32(6, 3, 1, 1), **{k: v for k, v in p.items()
                                                                                 if k != "mean"}},
               [N("Conv", ["x", "w"], ["c"]), N("BatchNormalization", bn_in, ["y"])], ["y"])
    assert canon(run_pass(fold_batchnorm, g3)) == canon(g3)


def test_fold_batchnorm_into_gemm() -> None:
    x = TensorType(F32, (batch, 5))
    g = build({"x": x}, {"w": f32(6, 5), "c": f32(6), **_bn_params(6)},
              [N("Gemm", ["x", "w", "c"], ["g"], transB=1, beta=0.5),
               N("BatchNormalization", ["g", "scale", "bias", "mean", "var"], ["y"])], ["y"])
    out = run_pass(eliminate_dead_code, run_pass(fold_batchnorm, g))
    assert [(n.op, n.outputs) for n in out.nodes] == [("Gemm", ["y"])]
    assert_same_numerics(g, out)


# ---- optimize --------------------------------------------------------------------------------


def test_optimize_pipeline_reaches_fixed_point_and_logs() -> None:
    x = TensorType(F32, (batch, 3, 4, 4))
    p = _bn_params(8)
    g = build(
        {"x": x},
        {"w": f32(8, 3, 1, 1), "one": np.ones(1, np.float32), "one_b": np.ones(1, np.float32),
         "s": i64(0, 8, 16), **p},
        [N("Identity", ["x"], ["xi"]), N("Conv", ["xi", "w"], ["c"]),
         N("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"]),
         N("Add", ["one", "one_b"], ["two"]), N("Mul", ["bn", "two"], ["m1"]), N("Mul", ["bn", "two"], ["m2"]),
         N("Add", ["m1", "m2"], ["a"]), N("Reshape", ["a", "s"], ["r"]),
         N("Transpose", ["r"], ["t"], perm=[0, 2, 1]), N("Transpose", ["t"], ["y"], perm=[0, 2, 1])],
        ["y"],
    )
    log = PassLog()
    out = optimize(g, debug=log)
    assert [n.op for n in out.nodes] == ["Conv", "Mul", "Add", "Reshape"]
    assert len(log.entries) % len(DEFAULT_PASSES) == 0 and len(log.entries) >= 2 * len(DEFAULT_PASSES)
    assert log.entries[-1] == ("eliminate_dead_code", str(out))
    assert log.texts("fold_batchnorm")[0].count("BatchNormalization") == 0
    assert "Identity" not in log.texts("fold_constants")[0]
    assert optimize(out).nodes == out.nodes
    assert_same_numerics(g, out)


def test_optimize_names_the_pass_that_broke_the_graph() -> None:
    g = build({"x": TensorType(F32, (2,))}, {}, [N("Relu", ["x"], ["y"])], ["y"])

    def break_graph(h: Graph) -> Graph:
        out = h.copy()
        out.outputs = ["nowhere"]
        return out

    with pytest.raises(GraphError, match="pass break_graph produced an invalid graph: .*nowhere"):
        optimize(g, passes=[eliminate_dead_code, break_graph])
