"""Winograd F(mxm, 3x3) convolutions (m = 2 or 4): a 3x3, stride-1 convolution rewritten as
three matrix products over (m+2)x(m+2) input tiles (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016).

For every mxm output tile, ``Y = A^T [(G w G^T) * (B^T d B)] A``: the a*a products per tile and
channel pair (a = m + 2) replace 9*m*m multiply-adds of the direct convolution. In graph form::

    T  = ExtractTiles(x)              (a*a, C, N, th, tw)  every axa window of the padded input, stride m
    V  = Bk @ T                       (a*a, C*N*th*tw)     input transform, Bk = kron(B^T, B^T)
    M  = U @ V                        (a*a, K, N*th*tw)    one GEMM per tile position, U = G w G^T
    Ym = Ak @ M                       (m*m, K*N*th*tw)     output transform, Ak = kron(A^T, A^T)
    y  = AssembleTiles(Ym) + bias     (N, K, Ho, Wo)

Only ordinary matrix products and injective ops remain, so fusion, the schedule rules and the
auto-scheduler treat them like any other kernel. The filter transform ``U`` is done here, once,
in float64. The rewrite applies where it needs clearly fewer multiply-adds than the direct
convolution (counting the dense transforms); of the two tile sizes, the larger one (fewer
multiplications, but 2.25x larger transformed weights, more edge waste and larger transform
errors) is taken only where it saves clearly more. ``TESSERA_WINOGRAD=0`` turns it off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tessera.graph.ir import Graph, Node
from tessera.graph.ops.nn import make_window
from tessera.graph.passes._rewrite import op_attrs
from tessera.graph.shape_inference import infer_node

ENV = "TESSERA_WINOGRAD"
MAX_COST_RATIO = 0.7  # rewrite when the Winograd form needs at most this share of the direct MACs
# multiply-adds saved per element of the transformed input (the per-call tile gather and transform
# move (a/m)^2 elements per input element; each saves (9 - (a/m)^2) * K / (a/m)^2 multiply-adds): below
# this the gather and transforms cost more than they save. Measured on ResNet-50: F(2x2) at 64 channels
# (80) was 2 ms slower end to end, F(2x2) at 128 (160) is faster; F(4x4) at 64 (192) is faster in isolation
# (56x56, default schedules: 1.45 -> 1.10 ms) and on par with the tuned direct convolution in the tuned model
MIN_SAVED_PER_ELEMENT = 150
LARGE_TILE_MAX_COST = 0.75  # F(4x4) replaces F(2x2) when it needs at most this share of its multiply-adds
MIN_TILES = 16  # GEMM columns: each transformed weight is reused at least this often (else weight-bound)


@dataclass(frozen=True)
class Variant:
    """F(mxm, 3x3): output tile m, input tile a = m + 2; ``b_t`` (a, a), ``g`` (a, 3), ``a_t`` (m, a)."""

    m: int
    b_t: np.ndarray
    g: np.ndarray
    a_t: np.ndarray

    @property
    def a(self) -> int:
        return self.m + 2

    def saved_per_element(self, k: int) -> float:
        """Direct multiply-adds saved per transformed input element, ``k`` output channels."""
        growth = (self.a / self.m) ** 2
        return (9 - growth) * k / growth

    def cost(self, k: int, c: int, tiles: int) -> int:
        """Multiply-adds: input transform, a*a GEMMs, output transform (dense kron transforms)."""
        a2 = self.a * self.a
        return a2 * a2 * c * tiles + a2 * k * c * tiles + self.m * self.m * a2 * k * tiles


# interpolation points 0, 1, -1 (and 2, -2 for m = 4), plus infinity
F2 = Variant(2, np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
             np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
             np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64))
F4 = Variant(4, np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                          [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
             np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                       [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
             np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                      np.float64))


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


def choose_variant(k: int, c: int, n: int, outs: list[int]) -> tuple[Variant, int, int] | None:
    """(variant, tiles h, tiles w) for a 3x3 convolution with ``k`` output and ``c`` input channels,
    batch ``n`` and output size ``outs``, or None when the direct convolution is the better choice."""
    direct = 9 * k * c * outs[0] * outs[1] * n
    best: tuple[Variant, int, int] | None = None
    best_cost = MAX_COST_RATIO * direct
    for v in (F2, F4):
        th, tw = -(-outs[0] // v.m), -(-outs[1] // v.m)
        cost = v.cost(k, c, n * th * tw)
        limit = best_cost if best is None else LARGE_TILE_MAX_COST * best_cost
        if n * th * tw >= MIN_TILES and v.saved_per_element(k) >= MIN_SAVED_PER_ELEMENT and cost <= limit:
            best, best_cost = (v, th, tw), cost
    return best


def _eligible(g: Graph, node: Node) -> tuple[list[int], list[int], Variant, int, int] | None:
    """(pads begin [h, w], output size [h, w], variant, tiles h, tiles w) when ``node`` should be rewritten."""
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
    choice = choose_variant(w.shape[0], c, n, outs)
    return None if choice is None else (begins, outs, *choice)


def _rewrite(g: Graph, conv: Node, begins: list[int], outs: list[int], var: Variant, th: int, tw: int) -> list[Node]:
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
    a, a2, mt = var.a, var.a * var.a, var.m
    hp, wp = mt * th + 2, mt * tw + 2  # padded input covering every axa tile
    pads = [begins[0], begins[1], hp - h - begins[0], wp - wd - begins[1]]
    t = add("ExtractTiles", [x], "tiles", {"kernel_shape": [a, a], "strides": [mt, mt], "pads": pads})
    t2 = add("Reshape", [t, const("shape_t", np.array([a2, c * p], i64))], "tiles2d")
    v = add("MatMul", [const("bt", np.kron(var.b_t, var.b_t).astype(np.float32)), t2], "input_transform")
    v3 = add("Reshape", [v, const("shape_v", np.array([a2, c, p], i64))], "v")
    u = np.einsum("ia,kcab,jb->ijkc", var.g, w, var.g).reshape(a2, k, c).astype(np.float32)
    m = add("MatMul", [const("u", u), v3], "gemm")
    m2 = add("Reshape", [m, const("shape_m", np.array([a2, k * p], i64))], "m2d")
    ym = add("MatMul", [const("at", np.kron(var.a_t, var.a_t).astype(np.float32)), m2], "output_transform")
    final = conv.outputs[0]
    y = add("AssembleTiles", [ym], "assemble", {"tile": [mt, mt], "output_shape": [n, k, *outs]},
            output=None if bias else final)
    if bias:
        add("Add", [y, const("bias", g.constants[bias].reshape(1, k, 1, 1))], "bias", output=final)
    return new
