"""Winograd F(2x2, 3x3) convolutions: a 3x3, stride-1 convolution rewritten as three matrix
products over 4x4 input tiles (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016).

For every 2x2 output tile, ``Y = A^T [(G w G^T) * (B^T d B)] A``: the 16 products per tile and
channel pair replace 36 multiply-adds of the direct convolution. In graph form::

    T  = ExtractTiles(x)              (16, C, N, th, tw)  every 4x4 window of the padded input, stride 2
    V  = Bk @ T                       (16, C*N*th*tw)     input transform, Bk = kron(B^T, B^T)
    M  = U @ V                        (16, K, N*th*tw)    one GEMM per tile position, U = G w G^T
    Y4 = Ak @ M                       (4, K*N*th*tw)      output transform, Ak = kron(A^T, A^T)
    y  = AssembleTiles(Y4) + bias     (N, K, Ho, Wo)

Only ordinary matrix products and injective ops remain, so fusion, the schedule rules and the
auto-scheduler treat them like any other kernel. The filter transform ``U`` is done here, once,
in float64. The rewrite applies where it needs clearly fewer multiply-adds than the direct
convolution (counting the dense transforms); ``TESSERA_WINOGRAD=0`` turns it off.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tessera.graph.ir import Graph, Node
from tessera.graph.ops.nn import make_window
from tessera.graph.passes._rewrite import op_attrs
from tessera.graph.shape_inference import infer_node

ENV = "TESSERA_WINOGRAD"
MAX_COST_RATIO = 0.7  # rewrite when the Winograd form needs at most this share of the direct MACs
# output channels: each transformed input element feeds this many multiply-adds of the GEMMs; below it the
# per-call tile gather and transforms cost more than the multiplications they save (measured on ResNet-50,
# tuned, in the model: rewriting the 64-channel 56x56 convolutions too was 2 ms slower end to end; the
# 128..512-channel ones gain 3 ms)
MIN_OUT_CHANNELS = 128

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def enabled() -> bool:
    """Whether compiles rewrite convolutions (``TESSERA_WINOGRAD=0`` disables)."""
    return os.environ.get(ENV, "1") not in ("0", "false", "no", "off")


def for_cpu(g: Graph) -> Graph:
    """The rewrite as CPU compiles apply it: :func:`winograd_convolutions` unless disabled."""
    return winograd_convolutions(g) if enabled() else g


def winograd_convolutions(g: Graph) -> Graph:
    """Rewrite every eligible Conv of a static-shape graph (see module docstring)."""
    out = g.copy()
    nodes: list[Node] = []
    changed = False
    for node in out.nodes:
        plan = _eligible(out, node)
        if plan is None:
            nodes.append(node)
            continue
        nodes.extend(_rewrite(out, node, *plan))
        changed = True
    if not changed:
        return g
    out.nodes = nodes
    return out


def transform_cost(k: int, c: int, tiles: int) -> int:
    """Multiply-adds of the Winograd form: input transform, 16 GEMMs, output transform."""
    return 16 * 16 * c * tiles + 16 * k * c * tiles + 4 * 16 * k * tiles


def _eligible(g: Graph, node: Node) -> tuple[list[int], list[int], int, int] | None:
    """(pads begin [h, w], output size [h, w], tiles h, tiles w) when ``node`` should be rewritten."""
    if node.op != "Conv" or len(node.inputs) < 2 or node.inputs[0] in g.constants:
        return None
    w = g.constants.get(node.inputs[1])
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else ""
    if w is None or w.dtype != np.float32 or w.ndim != 4 or w.shape[2:] != (3, 3):
        return None
    if bias and (bias not in g.constants or g.constants[bias].dtype != np.float32):
        return None
    xt = g.types[node.inputs[0]]
    if not xt.is_static or xt.rank != 4 or str(xt.dtype) != "f32":
        return None
    attrs = op_attrs(node)
    if int(attrs.get("group", 1)) != 1:
        return None
    try:
        win = make_window(attrs, [3, 3])
    except ValueError:
        return None
    if list(win.strides) != [1, 1] or list(win.dilations) != [1, 1]:
        return None
    n, c, h, wd = (int(d) for d in xt.shape)
    begins, outs = [], []
    for i, size in enumerate((h, wd)):
        pb, pe, o = win.resolve(size, i)
        if pb < 0 or pe < 0 or o < 1:
            return None
        begins.append(pb)
        outs.append(o)
    k = w.shape[0]
    if k < MIN_OUT_CHANNELS:
        return None
    th, tw = -(-outs[0] // 2), -(-outs[1] // 2)
    direct = 9 * k * c * outs[0] * outs[1] * n
    if transform_cost(k, c, n * th * tw) > MAX_COST_RATIO * direct:
        return None
    return begins, outs, th, tw


def _rewrite(g: Graph, conv: Node, begins: list[int], outs: list[int], th: int, tw: int) -> list[Node]:
    x, w_name = conv.inputs[0], conv.inputs[1]
    bias = conv.inputs[2] if len(conv.inputs) > 2 else ""
    n, c, h, wd = (int(d) for d in g.types[x].shape)
    w = g.constants[w_name].astype(np.float64)
    k = w.shape[0]
    p = n * th * tw
    base = conv.name or conv.outputs[0]
    new: list[Node] = []

    def const(hint: str, value: Any) -> str:
        return g.add_constant(g.fresh_name(f"{base}_{hint}"), np.asarray(value))

    def add(op: str, inputs: list[str], hint: str, attrs: dict[str, Any] | None = None,
            output: str | None = None) -> str:
        y = output or g.fresh_name(f"{base}_{hint}")
        node = Node(op, inputs, [y], attrs or {}, f"{base}/{hint}")
        g.types[y] = infer_node(g, node, {i: g.constants[i] for i in inputs if i in g.constants})[0]
        new.append(node)
        return y

    i64 = np.int64
    hp, wp = 2 * th + 2, 2 * tw + 2  # padded input covering every 4x4 tile
    pads = [begins[0], begins[1], hp - h - begins[0], wp - wd - begins[1]]
    t = add("ExtractTiles", [x], "tiles", {"kernel_shape": [4, 4], "strides": [2, 2], "pads": pads})
    t2 = add("Reshape", [t, const("shape_t", np.array([16, c * p], i64))], "tiles2d")
    v = add("MatMul", [const("bt", np.kron(B_T, B_T).astype(np.float32)), t2], "input_transform")
    v3 = add("Reshape", [v, const("shape_v", np.array([16, c, p], i64))], "v")
    u = np.einsum("ia,kcab,jb->ijkc", G, w, G).reshape(16, k, c).astype(np.float32)
    m = add("MatMul", [const("u", u), v3], "gemm")
    m2 = add("Reshape", [m, const("shape_m", np.array([16, k * p], i64))], "m2d")
    y4 = add("MatMul", [const("at", np.kron(A_T, A_T).astype(np.float32)), m2], "output_transform")
    final = conv.outputs[0]
    y = add("AssembleTiles", [y4], "assemble", {"tile": [2, 2], "output_shape": [n, k, *outs]},
            output=None if bias else final)
    if bias:
        add("Add", [y, const("bias", g.constants[bias].reshape(1, k, 1, 1))], "bias", output=final)
    return new
