"""Operators: windowed and global pooling (MaxPool, AveragePool, LpPool, Global*Pool).

Window geometry (pads, auto_pad, ceil_mode, dilations) is shared with Conv, see ``nn.py``."""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.graph.dtypes import DType
from tessera.graph.op_helpers import numel
from tessera.graph.ops.nn import Window, kernel_slices, make_window, padded_windows, window_attrs, window_out_shape
from tessera.graph.registry import Attr, InferContext, OpDef, register
from tessera.graph.symbolic import Dim
from tessera.graph.tensor_type import TensorType

Arrays = list[np.ndarray | None]


def _pool_attrs(**extra: Attr) -> dict[str, Attr]:
    return {**window_attrs(False), "kernel_shape": Attr("ints"), "ceil_mode": Attr("int", 0, (0, 1)), **extra}


def _window(attrs: dict[str, Any]) -> Window:
    return make_window(attrs, attrs["kernel_shape"], bool(attrs["ceil_mode"]))


def _pool_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    try:
        win = _window(ctx.attrs)
    except ValueError as e:
        raise ctx.error(str(e)) from None
    if ctx.attrs.get("p", 1) < 1:
        raise ctx.error(f"attribute 'p' must be >= 1, got {ctx.attrs['p']}")
    if x.rank != win.rank + 2:
        raise ctx.error(f"kernel_shape {ctx.attrs['kernel_shape']} needs a rank-{win.rank + 2} input "
                        f"(N, C, ...), got {[str(d) for d in x.shape]}")
    if not x.dtype.is_float and ctx.node.op != "MaxPool":
        raise ctx.error(f"needs a float input, got {x.dtype}")
    out = TensorType(x.dtype, (*x.shape[:2], *window_out_shape(ctx, win, x.shape[2:])))
    return [out, TensorType(DType.int64, out.shape)]


def _pool_flops(ctx: InferContext, outs: list[TensorType]) -> Dim:
    k = 1
    for d in ctx.attrs["kernel_shape"]:
        k *= d
    return numel(outs[0].shape) * k


def _valid_count(mask_lengths: list[tuple[int, int, int]], lengths: list[int], win: Window,
                 outs: list[int]) -> np.ndarray:
    """Per output position, how many window taps fall inside [begin, end) of each padded axis."""
    mask = np.zeros(lengths)
    mask[tuple(slice(b, e) for b, e, _ in mask_lengths)] = 1.0
    count = np.zeros(outs)
    for _, sl in kernel_slices(win, outs):
        count += mask[sl]
    return count


# ---- MaxPool -------------------------------------------------------------------------------


def _maxpool_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    win = _window(attrs)
    xp, geo, _ = padded_windows(x.astype(np.float64), win, -np.inf)
    outs = [o for _, _, o in geo]
    best = np.full((*x.shape[:2], *outs), -np.inf)
    arg = np.zeros(best.shape, dtype=np.int64)
    spatial = x.shape[2:]
    # Flat index strides over the unpadded spatial dims: row-major, or column-major
    # when storage_order is 1.
    order = range(len(spatial)) if attrs["storage_order"] == 0 else reversed(range(len(spatial)))
    strides = [0] * len(spatial)
    step = 1
    for i in reversed(list(order)):
        strides[i] = step
        step *= spatial[i]
    for _, sl in kernel_slices(win, outs):
        best = np.maximum(best, xp[(slice(None), slice(None), *sl)])  # NaN propagates
    out = [best.astype(x.dtype)]
    if n_out > 1:
        # Indices: the first tap, in kernel order and inside the unpadded input, holding the
        # window's maximum (a NaN when the maximum is NaN).
        valid, _, _ = padded_windows(np.ones((1, 1, *spatial), bool), win, False)
        found = np.zeros(best.shape, dtype=bool)
        for off, sl in kernel_slices(win, outs):
            v = xp[(slice(None), slice(None), *sl)]
            flat = np.zeros(outs, dtype=np.int64)
            for i, (o, (pb, _, n)) in enumerate(zip(off, geo, strict=True)):
                pos = np.arange(n) * win.strides[i] + o * win.dilations[i] - pb
                flat = flat + (pos * strides[i]).reshape([-1 if j == i else 1 for j in range(len(outs))])
            hit = ~found & valid[(slice(None), slice(None), *sl)] & ((v == best) | (np.isnan(v) & np.isnan(best)))
            arg = np.where(hit, flat, arg)
            found |= hit
        nc = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[0], x.shape[1],
                                                                       *([1] * len(outs)))
        out.append(arg + nc * int(np.prod(spatial)))
    return out


register(OpDef(
    "MaxPool", _pool_infer, _maxpool_ref, _pool_attrs(storage_order=Attr("int", 0, (0, 1))), (1, 1), (1, 2),
    _pool_flops, doc="Max over sliding windows; optional Indices output (flat, unpadded positions).",
))


# ---- AveragePool / LpPool ------------------------------------------------------------------


def _window_sum(x: np.ndarray, win: Window, include_pad: bool) -> tuple[np.ndarray, np.ndarray]:
    """Window sums of ``x`` (zero padding) and the per-window element count to divide by."""
    xp, geo, lengths = padded_windows(x, win, 0.0)
    outs = [o for _, _, o in geo]
    total = np.zeros((*x.shape[:2], *outs))
    for _, sl in kernel_slices(win, outs):
        total += xp[(slice(None), slice(None), *sl)]
    # Pads count when include_pad; the extra end padding ceil_mode adds never does.
    bounds = [(0, pb + s + pe, 0) if include_pad else (pb, pb + s, 0)
              for (pb, pe, _), s in zip(geo, x.shape[2:], strict=True)]
    return total, _valid_count(bounds, lengths, win, outs)


def _avgpool_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    total, count = _window_sum(x.astype(np.float64), _window(attrs), bool(attrs["count_include_pad"]))
    return [(total / np.maximum(count, 1)).astype(x.dtype)]


def _lppool_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    p = attrs["p"]
    total, _ = _window_sum(np.abs(x.astype(np.float64)) ** p, _window(attrs), True)
    return [(total ** (1.0 / p)).astype(x.dtype)]


def _single_output(ctx: InferContext) -> list[TensorType]:
    return _pool_infer(ctx)[:1]


register(OpDef(
    "AveragePool", _single_output, _avgpool_ref, _pool_attrs(count_include_pad=Attr("int", 0, (0, 1))),
    (1, 1), (1, 1), _pool_flops, doc="Mean over sliding windows (pads counted if count_include_pad).",
))
register(OpDef(
    "LpPool", _single_output, _lppool_ref, _pool_attrs(p=Attr("int", 2)), (1, 1), (1, 1), _pool_flops,
    doc="(sum |x|^p)^(1/p) over sliding windows.",
))


# ---- Global pools --------------------------------------------------------------------------


def _global_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    if x.rank < 3:
        raise ctx.error(f"needs (N, C, D1...), got {[str(d) for d in x.shape]}")
    if ctx.attrs.get("p", 1) < 1:
        raise ctx.error(f"attribute 'p' must be >= 1, got {ctx.attrs['p']}")
    return [TensorType(x.dtype, (*x.shape[:2], *([1] * (x.rank - 2))))]


def _global(name: str, fn: Any, attrs: dict[str, Attr] | None = None, doc: str = "") -> None:
    def ref(inputs: Arrays, a: dict[str, Any], n_out: int) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        axes = tuple(range(2, x.ndim))
        return [np.asarray(fn(x.astype(np.float64), axes, a)).astype(x.dtype)]

    register(OpDef(name, _global_infer, ref, attrs or {}, (1, 1), (1, 1),
                   lambda ctx, outs: numel(ctx.type(0).shape), doc=doc))


_global("GlobalAveragePool", lambda x, ax, a: x.mean(axis=ax, keepdims=True), doc="Mean over spatial dims.")
_global("GlobalMaxPool", lambda x, ax, a: x.max(axis=ax, keepdims=True), doc="Max over spatial dims.")
_global("GlobalLpPool",
        lambda x, ax, a: (np.abs(x) ** a["p"]).sum(axis=ax, keepdims=True) ** (1.0 / a["p"]),
        {"p": Attr("int", 2)}, doc="(sum |x|^p)^(1/p) over spatial dims.")
