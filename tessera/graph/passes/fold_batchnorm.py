"""Folding inference-mode BatchNormalization into a preceding Conv or Gemm."""

from __future__ import annotations

import numpy as np

from tessera.graph.ir import Graph, Node
from tessera.graph.passes._rewrite import GraphEditor, infers_as, op_attrs, use_counts


def fold_batchnorm(g: Graph) -> Graph:
    """Fold ``BatchNormalization(Conv(x, W, b))`` into ``Conv(x, W', b')`` and
    ``BatchNormalization(Gemm(a, B, C))`` (2-D) into ``Gemm(a, B', C')``.

    Applies when the BN is in inference mode with constant parameters, the Conv/Gemm weights
    (and bias, if any) are constants, and the Conv/Gemm output feeds only that BN. With
    ``s = scale / sqrt(var + eps)``: ``W' = W * s`` per output channel and
    ``b' = (b - mean) * s + bias``. Arithmetic is done in float64."""
    out = g.copy()
    ed = GraphEditor(out)
    producers = ed.producer
    uses = use_counts(out)
    for bn in list(out.nodes):
        if bn.op != "BatchNormalization" or len(bn.inputs) < 5 or not bn.inputs[0]:
            continue
        prev = producers.get(bn.inputs[0])
        if prev is None or prev.op not in ("Conv", "Gemm") or uses.get(bn.inputs[0], 0) != 1:
            continue
        params = [out.constants.get(i) for i in bn.inputs[1:5]]
        attrs = op_attrs(bn)
        if any(p is None for p in params) or attrs.get("training_mode", 0):
            continue
        if len([o for o in bn.outputs if o]) != 1 or not bn.outputs[0]:
            continue
        scale, bias, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
        s = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        shift = bias - mean * s
        fused = _fold_conv(out, prev, s, shift) if prev.op == "Conv" else _fold_gemm(out, prev, s, shift)
        if fused is None:
            continue
        y = bn.outputs[0]
        fused.outputs = [y]
        new_consts = [i for i in fused.inputs if i not in g.constants and i in out.constants]
        if not infers_as(out, fused, [out.types[y]]):
            for c in new_consts:
                del out.constants[c], out.types[c]
            continue
        ed.remove(bn)
        ed.replace(prev, fused)
        out.types.pop(prev.outputs[0], None)
    return ed.finish()


def _fold_conv(g: Graph, conv: Node, s: np.ndarray, shift: np.ndarray) -> Node | None:
    w = g.constants.get(conv.inputs[1]) if len(conv.inputs) > 1 else None
    b_name = conv.inputs[2] if len(conv.inputs) > 2 else ""
    if w is None or w.ndim < 2 or w.shape[0] != s.size or w.dtype.kind != "f":
        return None
    if b_name and b_name not in g.constants:
        return None
    b = np.asarray(g.constants[b_name], np.float64) if b_name else np.zeros(s.size)
    w_new = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    b_new = ((b.reshape(-1) * s) + shift).astype(w.dtype)
    w_name = g.add_constant(g.fresh_name(f"{conv.inputs[1]}_bn"), w_new)
    b_name = g.add_constant(g.fresh_name(f"{b_name or conv.inputs[1]}_bn_bias"), b_new)
    return Node("Conv", [conv.inputs[0], w_name, b_name], [], dict(conv.attrs), conv.name)


def _fold_gemm(g: Graph, gemm: Node, s: np.ndarray, shift: np.ndarray) -> Node | None:
    b = g.constants.get(gemm.inputs[1]) if len(gemm.inputs) > 1 else None
    c_name = gemm.inputs[2] if len(gemm.inputs) > 2 else ""
    if b is None or b.ndim != 2 or b.dtype.kind != "f" or (c_name and c_name not in g.constants):
        return None
    attrs = op_attrs(gemm)
    trans_b = bool(attrs.get("transB", 0))
    if b.shape[0 if trans_b else 1] != s.size:
        return None
    b_new = b.astype(np.float64) * (s[:, None] if trans_b else s[None, :])
    c = np.asarray(g.constants[c_name], np.float64) if c_name else np.zeros(())
    c_new = float(attrs.get("beta", 1.0)) * c * s + shift
    b_name = g.add_constant(g.fresh_name(f"{gemm.inputs[1]}_bn"), b_new.astype(b.dtype))
    c_name = g.add_constant(g.fresh_name(f"{c_name or gemm.inputs[1]}_bn_bias"), c_new.astype(b.dtype))
    new_attrs = dict(gemm.attrs)
    new_attrs["beta"] = 1.0
    return Node("Gemm", [gemm.inputs[0], b_name, c_name], [], new_attrs, gemm.name)
