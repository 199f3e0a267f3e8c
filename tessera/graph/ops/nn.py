"""Operators: convolution, transposed convolution, dropout, resize, depth/space shuffles, LRN.

Also holds the sliding-window geometry (kernel, strides, dilations, pads, auto_pad, ceil_mode)
shared with the pooling operators. Output sizes are Dim expressions, so a symbolic spatial
dim ``h`` gives e.g. ``(h + 2 - 3)//2 + 1``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tessera.graph.dtypes import DType
from tessera.graph.op_helpers import numel, same_as_input
from tessera.graph.ops.linalg import acc_dtype, dims_conflict
from tessera.graph.registry import Attr, InferContext, OpDef, register
from tessera.graph.symbolic import Dim
from tessera.graph.tensor_type import TensorType

Arrays = list[np.ndarray | None]
AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

# ---- sliding-window geometry (shared with pooling) -----------------------------------------


def window_attrs(kernel_attr: bool) -> dict[str, Attr]:
    """Attribute schema of a windowed op; ``kernel_attr`` adds kernel_shape (None = from W)."""
    out = {
        "auto_pad": Attr("str", "NOTSET"),
        "pads": Attr("ints", None),
        "strides": Attr("ints", None),
        "dilations": Attr("ints", None),
    }
    if kernel_attr:
        out["kernel_shape"] = Attr("ints", None)
    return out


@dataclass(frozen=True)
class Window:
    """Resolved geometry of an N-d sliding window; ``pads`` is begins then ends."""

    kernel: tuple[Dim, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    auto_pad: str
    ceil_mode: bool = False

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def out_dim(self, size: Dim, i: int) -> Dim:
        """Output length along spatial axis ``i`` for an input of length ``size``."""
        k, s, d = self.kernel[i], self.strides[i], self.dilations[i]
        dk = d * (k - 1) + 1
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            return (size + s - 1) // s
        pb, pe = (0, 0) if self.auto_pad == "VALID" else (self.pads[i], self.pads[i + self.rank])
        if not self.ceil_mode:
            return (size + pb + pe - dk) // s + 1
        # ceil mode drops a last window that would start inside the end padding; with
        # m = dk - pe that happens exactly when m < s, giving the start-limited count.
        if isinstance(dk, int) and dk - pe < s:
            return (size + pb - 1) // s + 1
        return (size + pb + pe - dk + s - 1) // s + 1

    def resolve(self, size: int, i: int) -> tuple[int, int, int]:
        """Concrete (pad_begin, pad_end, out) for one spatial axis of a concrete input."""
        k, s, d = int(self.kernel[i]), self.strides[i], self.dilations[i]
        out = int(self.out_dim(size, i))
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
            small, big = total // 2, total - total // 2
            return (small, big, out) if self.auto_pad == "SAME_UPPER" else (big, small, out)
        if self.auto_pad == "VALID":
            return 0, 0, out
        return self.pads[i], self.pads[i + self.rank], out


def make_window(attrs: dict[str, Any], kernel: Sequence[Dim], ceil_mode: bool = False) -> Window:
    """Validate a windowed op's attributes against a kernel of ``len(kernel)`` spatial dims."""
    n = len(kernel)
    # An attribute given as an empty list is given with the wrong length (onnxruntime refuses it too).
    strides = [1] * n if attrs.get("strides") is None else attrs["strides"]
    dilations = [1] * n if attrs.get("dilations") is None else attrs["dilations"]
    pads = [0] * (2 * n) if attrs.get("pads") is None else attrs["pads"]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {AUTO_PADS}, got {auto_pad!r}")
    if len(strides) != n or len(dilations) != n or len(pads) != 2 * n:
        raise ValueError(
            f"{n} spatial dims need {n} strides/dilations and {2 * n} pads, "
            f"got strides={strides} dilations={dilations} pads={pads}"
        )
    if any(isinstance(k, (int, np.integer)) and k < 1 for k in kernel):
        raise ValueError(f"kernel_shape must be positive, got {[str(k) for k in kernel]}")
    if min(strides, default=1) < 1 or min(dilations, default=1) < 1 or min(pads, default=0) < 0:
        raise ValueError(f"bad window: strides={strides} dilations={dilations} pads={pads} (strides and "
                         "dilations must be >= 1, pads >= 0)")
    return Window(tuple(kernel), tuple(strides), tuple(dilations), tuple(pads), auto_pad, ceil_mode)


def window_out_shape(ctx: InferContext, win: Window, spatial: Sequence[Dim]) -> list[Dim]:
    """Output spatial dims; errors name the node when a window does not fit."""
    out = [win.out_dim(d, i) for i, d in enumerate(spatial)]
    for i, o in enumerate(out):
        if isinstance(o, int) and o < 1:
            raise ctx.error(
                f"window (kernel {win.kernel[i]}, dilation {win.dilations[i]}) does not fit spatial "
                f"dim {i} of size {spatial[i]} with pads {win.pads}: output size {o}"
            )
    return out


def padded_windows(
    x: np.ndarray, win: Window, pad_value: float
) -> tuple[np.ndarray, list[tuple[int, int, int]], list[int]]:
    """Pad ``x`` (N, C, *spatial) so that every window is in bounds (ceil mode may need
    extra end padding). Returns the padded array, per-axis (pad_begin, pad_end, out) and the
    padded lengths."""
    geo = [win.resolve(int(d), i) for i, d in enumerate(x.shape[2:])]
    widths = [(0, 0), (0, 0)]
    lengths = []
    for i, (pb, pe, out) in enumerate(geo):
        size = x.shape[2 + i]
        need = (out - 1) * win.strides[i] + win.dilations[i] * (int(win.kernel[i]) - 1) + 1
        end = max(pe, need - pb - size)
        widths.append((pb, end))
        lengths.append(pb + size + end)
    return np.pad(x, widths, constant_values=pad_value), geo, lengths


def kernel_slices(win: Window, outs: Sequence[int]) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """For each kernel offset (row-major), the strided slices selecting its input positions."""
    for off in itertools.product(*(range(int(k)) for k in win.kernel)):
        yield off, tuple(
            slice(o * d, o * d + (n - 1) * s + 1, s)
            for o, d, s, n in zip(off, win.dilations, win.strides, outs, strict=True)
        )


# ---- Conv ----------------------------------------------------------------------------------


def _conv_window(ctx: InferContext, x: TensorType, w: TensorType) -> Window:
    if x.rank < 3 or w.rank != x.rank:
        raise ctx.error(f"X must be (N, C, D1...) and W (M, C/group, k1...) of the same rank; "
                        f"got X{_s(x.shape)} W{_s(w.shape)}")
    kernel = tuple(w.shape[2:])
    ks = ctx.attrs.get("kernel_shape")
    if ks is not None:
        if len(ks) != len(kernel) or any(dims_conflict(a, b) for a, b in zip(ks, kernel, strict=True)):
            raise ctx.error(f"kernel_shape {ks} does not match W{_s(w.shape)}")
        kernel = tuple(ks)
    try:
        return make_window(ctx.attrs, kernel)
    except ValueError as e:
        raise ctx.error(str(e)) from None


def _s(shape: Sequence[Dim]) -> list[str]:
    return [str(d) for d in shape]


def conv_out_shape(ctx: InferContext, x: TensorType, w: TensorType, bias: TensorType | None) -> tuple[Dim, ...]:
    """Output shape of a (grouped) convolution of X by W, checking channels and bias."""
    win = _conv_window(ctx, x, w)
    g = ctx.attrs["group"]
    m, cg = w.shape[0], w.shape[1]
    if g < 1 or (isinstance(m, int) and m % g):
        raise ctx.error(f"group {g} must divide the {m} output channels")
    if dims_conflict(x.shape[1], cg * g):
        raise ctx.error(
            f"channel mismatch: X has {x.shape[1]} channels but W{_s(w.shape)} with group={g} "
            f"expects {cg * g}"
        )
    if bias is not None and (bias.rank != 1 or dims_conflict(bias.shape[0], m)):
        raise ctx.error(f"bias must be ({m},), got {_s(bias.shape)}")
    return (x.shape[0], m, *window_out_shape(ctx, win, x.shape[2:]))


def _conv_infer(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.type(0), ctx.type(1)
    if x.dtype != w.dtype:
        raise ctx.error(f"X is {x.dtype} but W is {w.dtype}")
    if not x.dtype.is_float:
        raise ctx.error(f"needs float inputs, got {x.dtype} (use ConvInteger / QLinearConv)")
    bias = ctx.type(2) if ctx.has_input(2) else None
    return [TensorType(x.dtype, conv_out_shape(ctx, x, w, bias))]


def _conv_flops(ctx: InferContext, outs: list[TensorType]) -> Dim:
    w = ctx.type(1).shape
    return 2 * numel(outs[0].shape) * numel(w[1:]) + (numel(outs[0].shape) if ctx.has_input(2) else 0)


def conv_nd(x: np.ndarray, w: np.ndarray, win: Window, group: int) -> np.ndarray:
    """Grouped N-d convolution via im2col and a batched matmul, in the arrays' dtype
    (callers pass float64 or int64 for an exact/accurate result)."""
    xp, geo, _ = padded_windows(x, win, 0)
    outs = [o for _, _, o in geo]
    n, c = x.shape[:2]
    m = w.shape[0]
    k = int(np.prod(w.shape[2:]))
    cols = np.empty((n, c, k, int(np.prod(outs))), dtype=xp.dtype)
    for idx, (_, sl) in enumerate(kernel_slices(win, outs)):
        cols[:, :, idx] = xp[(slice(None), slice(None), *sl)].reshape(n, c, -1)
    cols = cols.reshape(n, group, (c // group) * k, -1)
    wm = w.reshape(group, m // group, -1)
    return np.matmul(wm, cols).reshape(n, m, *outs)


def _conv_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    assert x is not None and w is not None
    acc = acc_dtype(x.dtype)
    win = make_window(attrs, w.shape[2:])
    y = conv_nd(x.astype(acc), w.astype(acc), win, attrs["group"])
    if b is not None:
        y = y + b.astype(acc).reshape(-1, *([1] * (y.ndim - 2)))
    return [y.astype(x.dtype)]


register(OpDef(
    "Conv", _conv_infer, _conv_ref, {"group": Attr("int", 1), **window_attrs(True)},
    (2, 3), (1, 1), _conv_flops, doc="N-d grouped convolution (cross-correlation), NCHW layout.",
))


# ---- ConvTranspose -------------------------------------------------------------------------


def _convt_geometry(
    attrs: dict[str, Any], spatial: Sequence[Dim], kernel: Sequence[Dim]
) -> tuple[list[Dim], list[tuple[Dim, Dim]]]:
    """Output spatial dims and (pad_begin, pad_end) per axis (pads may be symbolic)."""
    n = len(kernel)
    win = make_window(attrs, kernel)
    op = attrs.get("output_padding") or [0] * n
    if len(op) != n:
        raise ValueError(f"output_padding needs {n} values, got {op}")
    if any(not 0 <= p < max(s, d) for p, s, d in zip(op, win.strides, win.dilations, strict=True)):
        raise ValueError(f"output_padding {op} must be >= 0 and less than the stride or the dilation "
                         f"(strides={list(win.strides)}, dilations={list(win.dilations)})")
    full = [
        s * (d_in - 1) + p + (k - 1) * dil + 1
        for d_in, s, p, k, dil in zip(spatial, win.strides, op, kernel, win.dilations, strict=True)
    ]
    out_shape = attrs.get("output_shape")
    if out_shape is not None:
        out: list[Dim] = list(out_shape[-n:])
    elif win.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [d * s for d, s in zip(spatial, win.strides, strict=True)]
    else:
        pads = [0] * (2 * n) if win.auto_pad == "VALID" else list(win.pads)
        return [f - pads[i] - pads[i + n] for i, f in enumerate(full)], [
            (pads[i], pads[i + n]) for i in range(n)
        ]
    geo: list[tuple[Dim, Dim]] = []
    for f, o in zip(full, out, strict=True):
        total = f - o
        if isinstance(total, int):
            half = total // 2
            geo.append((half, total - half) if win.auto_pad == "SAME_UPPER" else (total - half, half))
        else:
            geo.append((0, total))  # symbolic: exact split only matters to the reference
    return out, geo


def _convt_infer(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.type(0), ctx.type(1)
    if x.dtype != w.dtype:
        raise ctx.error(f"X is {x.dtype} but W is {w.dtype}")
    if x.rank < 3 or w.rank != x.rank:
        raise ctx.error(f"X must be (N, C, D1...) and W (C, M/group, k1...) of the same rank; "
                        f"got X{_s(x.shape)} W{_s(w.shape)}")
    g = ctx.attrs["group"]
    if dims_conflict(x.shape[1], w.shape[0]):
        raise ctx.error(f"channel mismatch: X has {x.shape[1]} channels, W{_s(w.shape)} expects {w.shape[0]}")
    if g < 1 or (isinstance(w.shape[0], int) and w.shape[0] % g):
        raise ctx.error(f"group {g} must divide the {w.shape[0]} input channels")
    kernel = ctx.attrs.get("kernel_shape") or list(w.shape[2:])
    try:
        out, _ = _convt_geometry(ctx.attrs, x.shape[2:], kernel)
    except ValueError as e:
        raise ctx.error(str(e)) from None
    for d in out:
        if isinstance(d, int) and d < 1:
            raise ctx.error(f"output spatial size {d} < 1")
    m = w.shape[1] * g
    if ctx.has_input(2) and (ctx.type(2).rank != 1 or dims_conflict(ctx.type(2).shape[0], m)):
        raise ctx.error(f"bias must be ({m},), got {_s(ctx.type(2).shape)}")
    return [TensorType(x.dtype, (x.shape[0], m, *out))]


def _convt_flops(ctx: InferContext, outs: list[TensorType]) -> Dim:
    return 2 * numel(ctx.type(0).shape) * numel(ctx.type(1).shape[1:])


def _convt_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    assert x is not None and w is not None
    acc = acc_dtype(x.dtype)
    g = attrs["group"]
    n, c = x.shape[:2]
    kernel = list(w.shape[2:])
    mg = w.shape[1]
    spatial = list(x.shape[2:])
    out, geo = _convt_geometry(attrs, spatial, kernel)
    win = make_window(attrs, kernel)
    # cols[n, m, k, *in]: every input position's contribution for each kernel offset.
    wt = w.astype(acc).reshape(g, c // g, mg * int(np.prod(kernel))).transpose(0, 2, 1)
    cols = np.matmul(wt, x.astype(acc).reshape(n, g, c // g, -1))
    cols = cols.reshape(n, g * mg, int(np.prod(kernel)), *spatial)
    # Accumulate into a buffer whose origin is at index -lo of the full (unpadded) output.
    lo = [min(0, int(pb)) for pb, _ in geo]
    hi = [max((s_in - 1) * s + (k - 1) * d + 1, int(pb) + int(o))
          for s_in, s, k, d, (pb, _), o in zip(spatial, win.strides, kernel, win.dilations, geo, out,
                                               strict=True)]
    buf = np.zeros((n, g * mg, *[h - l for h, l in zip(hi, lo, strict=True)]), dtype=acc)
    for idx, off in enumerate(itertools.product(*(range(k) for k in kernel))):
        sl = tuple(slice(o * d - l, o * d - l + (s_in - 1) * s + 1, s)
                   for o, d, l, s_in, s in zip(off, win.dilations, lo, spatial, win.strides, strict=True))
        buf[(slice(None), slice(None), *sl)] += cols[:, :, idx]
    crop = tuple(slice(int(pb) - l, int(pb) - l + int(o)) for (pb, _), l, o in zip(geo, lo, out, strict=True))
    y = buf[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + b.astype(acc).reshape(-1, *([1] * len(spatial)))
    return [y.astype(x.dtype)]


register(OpDef(
    "ConvTranspose", _convt_infer, _convt_ref,
    {"group": Attr("int", 1), "output_padding": Attr("ints", None), "output_shape": Attr("ints", None),
     **window_attrs(True)},
    (2, 3), (1, 1), _convt_flops, doc="N-d transposed (fractionally strided) convolution.",
))


# ---- Dropout -------------------------------------------------------------------------------


def _dropout_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    if ctx.has_input(1) and ctx.type(1).rank != 0:
        raise ctx.error("ratio must be a scalar")
    if ctx.has_input(2) and (ctx.type(2).rank != 0 or ctx.type(2).dtype != DType.bool):
        raise ctx.error("training_mode must be a bool scalar")
    return [x, TensorType(DType.bool, x.shape)]


def _dropout_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    ratio = float(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else 0.5
    training = bool(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else False
    if not training or ratio == 0.0:
        return [x.copy(), np.ones(x.shape, dtype=bool)]
    # Legacy seeded draw: with a seed the mask is reproducible and matches ONNX's test data.
    mask = np.random.RandomState(attrs["seed"]).uniform(0.0, 1.0, x.shape) >= ratio
    return [(x.astype(np.float64) * mask / (1.0 - ratio)).astype(x.dtype), mask]


register(OpDef(
    "Dropout", _dropout_infer, _dropout_ref, {"seed": Attr("int", None)}, (1, 3), (1, 2),
    doc="Identity at inference; random mask scaled by 1/(1-ratio) when training_mode is true.",
))


# ---- Resize --------------------------------------------------------------------------------

_RESIZE_ATTRS = {
    "mode": Attr("str", "nearest"),
    "coordinate_transformation_mode": Attr("str", "half_pixel"),
    "nearest_mode": Attr("str", "round_prefer_floor"),
    "cubic_coeff_a": Attr("float", -0.75),
    "exclude_outside": Attr("int", 0),
    "extrapolation_value": Attr("float", 0.0),
    "antialias": Attr("int", 0),
    "axes": Attr("ints", None),
    "keep_aspect_ratio_policy": Attr("str", "stretch"),
}
_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_crop_and_resize")


def _resize_axes(attrs: dict[str, Any], rank: int) -> list[int]:
    axes = attrs["axes"]
    if axes is None:
        return list(range(rank))
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ValueError(f"axis {a} out of range for rank {rank}")
        out.append(a % rank)
    return out


def _resize_plan(
    shape: Sequence[int], attrs: dict[str, Any], scales: np.ndarray | None, sizes: np.ndarray | None
) -> tuple[list[int], list[float]]:
    """Concrete output sizes and per-axis scale factors."""
    rank = len(shape)
    axes = _resize_axes(attrs, rank)
    if sizes is not None and sizes.size:
        if sizes.size != len(axes):
            raise ValueError(f"sizes has {sizes.size} values for {len(axes)} axes")
        out = list(shape)
        for a, s in zip(axes, sizes.tolist(), strict=True):
            out[a] = int(s)
        sc = [o / i if i else 1.0 for o, i in zip(out, shape, strict=True)]
        policy = attrs["keep_aspect_ratio_policy"]
        if policy in ("not_larger", "not_smaller"):
            pick = min if policy == "not_larger" else max
            s = pick(sc[a] for a in axes)
            sc = [s if i in axes else 1.0 for i in range(rank)]
            out = [int(s * shape[i] + 0.5) if i in axes else shape[i] for i in range(rank)]
        elif policy != "stretch":
            raise ValueError(f"unknown keep_aspect_ratio_policy {policy!r}")
        return out, sc
    if scales is None or not scales.size:
        raise ValueError("one of scales or sizes is required")
    if scales.size != len(axes):
        raise ValueError(f"scales has {scales.size} values for {len(axes)} axes")
    sc = [1.0] * rank
    for a, s in zip(axes, scales.tolist(), strict=True):
        if s <= 0:
            raise ValueError(f"scales must be positive, got {scales.tolist()}")
        sc[a] = float(s)
    return [int(np.floor(s * d)) for s, d in zip(sc, shape, strict=True)], sc


def _resize_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    a = ctx.attrs
    if a["mode"] not in ("nearest", "linear", "cubic"):
        raise ctx.error(f"unknown mode {a['mode']!r}")
    if a["coordinate_transformation_mode"] not in _COORD_MODES:
        raise ctx.error(f"unknown coordinate_transformation_mode {a['coordinate_transformation_mode']!r}")
    axes = _resize_axes(a, x.rank)
    shape: list[Dim] = list(x.shape)
    sizes = ctx.dims_value(3) if ctx.has_input(3) else None
    scales = ctx.const(2) if ctx.has_input(2) else None
    if sizes is not None and len(sizes) and a["keep_aspect_ratio_policy"] == "stretch":
        if len(sizes) != len(axes):
            raise ctx.error(f"sizes has {len(sizes)} values for {len(axes)} axes")
        for ax, s in zip(axes, sizes, strict=True):
            shape[ax] = s
        return [TensorType(x.dtype, tuple(shape))]
    sizes_known = sizes is not None and len(sizes) > 0 and all(isinstance(d, int) for d in sizes)
    if x.is_static and (sizes_known or (sizes is None and scales is not None and scales.size)):
        out, _ = _resize_plan([int(d) for d in x.shape], a, scales,
                              np.array(sizes, dtype=np.int64) if sizes is not None else None)
        return [TensorType(x.dtype, tuple(out))]
    if scales is not None and scales.size and (sizes is None or not len(sizes)):
        if scales.size != len(axes):
            raise ctx.error(f"scales has {scales.size} values for {len(axes)} axes")
        for ax, s in zip(axes, scales.tolist(), strict=True):
            d = x.shape[ax]
            if isinstance(d, int):
                shape[ax] = int(np.floor(s * d))
            elif float(s).is_integer():
                shape[ax] = d * int(s)
            elif (1.0 / s).is_integer():
                shape[ax] = d // int(round(1.0 / s))
            else:
                shape[ax] = ctx.fresh_dim(f"resize{ax}")
        return [TensorType(x.dtype, tuple(shape))]
    for ax in axes:  # output size only known at run time
        shape[ax] = ctx.fresh_dim(f"resize{ax}")
    return [TensorType(x.dtype, tuple(shape))]


def _resize_coords(mode: str, n_in: int, n_out: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    """Source coordinate of every output index along one axis."""
    o = np.arange(n_out, dtype=np.float64)
    width = scale * n_in  # may be fractional when the size came from a scale
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = (n_in / 2) * (1 - n_out / width)
        return offset + (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if n_out > 1 else np.zeros(n_out)
    if mode == "align_corners":
        return o * (n_in - 1) / (width - 1) if width != 1 else np.zeros(n_out)
    if mode == "asymmetric":
        return o / scale
    start, end = roi  # tf_crop_and_resize
    if width == 1:
        return np.full(n_out, (end - start) * (n_in - 1) / 2 + start * (n_in - 1))
    return o * (end - start) * (n_in - 1) / (width - 1) + start * (n_in - 1)


def _cubic_kernel(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _resize_matrix(n_in: int, n_out: int, scale: float, roi: tuple[float, float],
                   attrs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(n_out, n_in) interpolation weights for one axis, and which outputs extrapolate."""
    x = _resize_coords(attrs["coordinate_transformation_mode"], n_in, n_out, scale, roi)
    outside = np.zeros(n_out, dtype=bool)
    if attrs["coordinate_transformation_mode"] == "tf_crop_and_resize":
        outside = (x < 0) | (x > n_in - 1)
    w = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    mode = attrs["mode"]
    if mode == "nearest":
        nm = attrs["nearest_mode"]
        fl = np.floor(x)
        frac = x - fl
        if nm == "round_prefer_floor":
            idx = np.where(frac > 0.5, fl + 1, fl)
        elif nm == "round_prefer_ceil":
            idx = np.where(frac >= 0.5, fl + 1, fl)
        elif nm == "floor":
            idx = fl
        elif nm == "ceil":
            idx = np.ceil(x)
        else:
            raise ValueError(f"unknown nearest_mode {nm!r}")
        w[rows, np.clip(idx, 0, n_in - 1).astype(np.int64)] = 1.0
        return w, outside
    radius = 1 if mode == "linear" else 2
    sc = min(scale, 1.0) if attrs["antialias"] else 1.0
    reach = int(np.ceil(radius / sc)) + 1
    taps = np.floor(x)[:, None] + np.arange(-reach, reach + 1)[None, :]
    t = (taps - x[:, None]) * sc
    k = np.clip(1 - np.abs(t), 0, None) if mode == "linear" else _cubic_kernel(t, attrs["cubic_coeff_a"])
    if attrs["antialias"]:
        k = k / k.sum(axis=1, keepdims=True)
    if attrs["exclude_outside"]:
        k = np.where((taps < 0) | (taps > n_in - 1), 0.0, k)
        k = k / k.sum(axis=1, keepdims=True)
    np.add.at(w, (np.repeat(rows, taps.shape[1]), np.clip(taps, 0, n_in - 1).astype(np.int64).ravel()),
              k.ravel())
    return w, outside


def _apply_weights(w: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    """``w`` (n_out, n_in) applied along ``axis`` of ``y``, summing only the taps of nonzero
    weight: a NaN or inf that an output does not use does not reach it (0 * NaN would)."""
    taps = max(int((w != 0).sum(axis=1).max(initial=0)), 1)
    order = np.argsort(w == 0, axis=1, kind="stable")[:, :taps]  # each row's nonzero taps first
    wt = np.take_along_axis(w, order, axis=1)
    shape = [1] * y.ndim
    shape[axis] = w.shape[0]
    out = np.take(y, order[:, 0], axis=axis) * wt[:, 0].reshape(shape)  # not 0 + ...: keeps -0
    for k in range(1, taps):
        v = np.take(y, order[:, k], axis=axis) * wt[:, k].reshape(shape)
        out = np.where(wt[:, k].reshape(shape) != 0, out + v, out)
    return out


def _resize_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    roi, scales, sizes = (inputs[i] if len(inputs) > i else None for i in (1, 2, 3))
    out, sc = _resize_plan(x.shape, attrs, scales, sizes)
    rank = x.ndim
    axes = _resize_axes(attrs, rank)
    rois = [(0.0, 1.0)] * rank
    if roi is not None and roi.size:
        r = roi.astype(np.float64).ravel().tolist()
        for i, a in enumerate(axes):
            rois[a] = (r[i], r[i + len(axes)])
    y = x.astype(np.float64)
    outside = np.zeros(out, dtype=bool)
    for a in range(rank):
        if out[a] == x.shape[a] and sc[a] == 1.0 and rois[a] == (0.0, 1.0):
            continue
        w, ext = _resize_matrix(x.shape[a], out[a], sc[a], rois[a], attrs)
        y = _apply_weights(w, y, a)
        outside |= ext.reshape([-1 if i == a else 1 for i in range(rank)])
    y = np.where(outside, attrs["extrapolation_value"], y)
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        y = np.clip(np.rint(y), info.min, info.max)
    return [y.astype(x.dtype)]


register(OpDef("Resize", _resize_infer, _resize_ref, _RESIZE_ATTRS, (1, 4), (1, 1),
               lambda ctx, outs: numel(outs[0].shape) * 4,
               doc="Nearest / N-linear / N-cubic resampling with ONNX coordinate transforms."))


# ---- DepthToSpace / SpaceToDepth -----------------------------------------------------------


def _block_input(ctx: InferContext) -> tuple[TensorType, int]:
    """The checked input type and blocksize of DepthToSpace / SpaceToDepth."""
    x = ctx.type(0)
    b = ctx.attrs["blocksize"]
    if x.rank != 4 or b < 1:
        raise ctx.error(f"needs a 4-D input and blocksize >= 1, got {_s(x.shape)}, {b}")
    if ctx.attrs["mode"] not in ("DCR", "CRD"):
        raise ctx.error(f"mode must be DCR or CRD, got {ctx.attrs['mode']!r}")
    return x, b


def _d2s_infer(ctx: InferContext) -> list[TensorType]:
    x, b = _block_input(ctx)
    n, c, h, w = x.shape
    if isinstance(c, int) and c % (b * b):
        raise ctx.error(f"channels {c} not divisible by blocksize^2 = {b * b}")
    return [TensorType(x.dtype, (n, c // (b * b), h * b, w * b))]


def _d2s_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    b = attrs["blocksize"]
    n, c, h, w = x.shape
    if attrs["mode"] == "DCR":
        t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [t.reshape(n, c // (b * b), h * b, w * b)]


def _s2d_infer(ctx: InferContext) -> list[TensorType]:
    x, b = _block_input(ctx)
    n, c, h, w = x.shape
    for d in (h, w):
        if isinstance(d, int) and d % b:
            raise ctx.error(f"spatial dim {d} not divisible by blocksize {b}")
    return [TensorType(x.dtype, (n, c * b * b, h // b, w // b))]


def _s2d_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    b = attrs["blocksize"]
    n, c, h, w = x.shape
    t = x.reshape(n, c, h // b, b, w // b, b)
    perm = (0, 3, 5, 1, 2, 4) if attrs["mode"] == "DCR" else (0, 1, 3, 5, 2, 4)
    return [t.transpose(perm).reshape(n, c * b * b, h // b, w // b)]


_BLOCK_ATTRS = {"blocksize": Attr("int"), "mode": Attr("str", "DCR")}
register(OpDef("DepthToSpace", _d2s_infer, _d2s_ref, _BLOCK_ATTRS, (1, 1), (1, 1),
               doc="Move channel blocks into spatial blocks (DCR or CRD order)."))
register(OpDef("SpaceToDepth", _s2d_infer, _s2d_ref, _BLOCK_ATTRS, (1, 1), (1, 1),
               doc="Move spatial blocks into channels (DCR or CRD order)."))


# ---- ExtractTiles / AssembleTiles (Tessera-internal: the tiles of a Winograd convolution) ------


def _extract_geometry(ctx: InferContext) -> tuple[TensorType, list[Dim]]:
    x = ctx.type(0)
    k, s, p = list(ctx.attrs["kernel_shape"]), list(ctx.attrs["strides"]), list(ctx.attrs["pads"])
    if x.rank != 4 or len(k) != 2 or len(s) != 2 or len(p) != 4 or min(k + s) < 1 or min(p) < 0:
        raise ctx.error(f"needs a 4-D input, 2 kernel sizes, 2 strides >= 1 and 4 pads >= 0, got "
                        f"{_s(x.shape)}, {k}, {s}, {p}")
    out: list[Dim] = []
    for i, (d, kk, ss) in enumerate(zip(x.shape[2:], k, s, strict=True)):
        padded = d + p[i] + p[i + 2]
        if isinstance(padded, int) and (padded < kk or (padded - kk) % ss):
            raise ctx.error(f"windows of {kk} at stride {ss} do not tile a padded spatial dim of {padded} exactly")
        out.append((padded - kk) // ss + 1)
    return x, out


def _extract_infer(ctx: InferContext) -> list[TensorType]:
    x, (oh, ow) = _extract_geometry(ctx)
    k = ctx.attrs["kernel_shape"]
    return [TensorType(x.dtype, (k[0] * k[1], x.shape[1], x.shape[0], oh, ow))]


def _extract_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = attrs["kernel_shape"], attrs["strides"], attrs["pads"]
    x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    taps = [x[:, :, a:a + (oh - 1) * sh + 1:sh, b:b + (ow - 1) * sw + 1:sw] for a in range(kh) for b in range(kw)]
    return [np.stack(taps).transpose(0, 2, 1, 3, 4).copy()]


register(OpDef("ExtractTiles", _extract_infer, _extract_ref,
               {"kernel_shape": Attr("ints"), "strides": Attr("ints"), "pads": Attr("ints")}, (1, 1), (1, 1),
               doc="Every kernel_shape window of the zero-padded (N, C, H, W) input at the given strides, "
                   "window tap first: (kh*kw, C, N, oh, ow); the windows must tile the padded input exactly "
                   "(Tessera-internal: Winograd input tiles)."))


def _assemble_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    tile, shape = list(ctx.attrs["tile"]), list(ctx.attrs["output_shape"])
    if t.rank != 2 or len(tile) != 2 or len(shape) != 4 or min(tile + shape) < 1:
        raise ctx.error(f"needs a 2-D input, a 2-D tile and a 4-D output_shape, got {_s(t.shape)}, {tile}, {shape}")
    n, k, h, w = shape
    need = (tile[0] * tile[1], k * n * -(-h // tile[0]) * -(-w // tile[1]))
    if isinstance(t.shape[0], int) and isinstance(t.shape[1], int) and tuple(t.shape) != need:
        raise ctx.error(f"input {_s(t.shape)} does not hold {tile} tiles of output {shape} (needs {list(need)})")
    return [TensorType(t.dtype, tuple(shape))]


def _assemble_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    t = inputs[0]
    assert t is not None
    (mh, mw), (n, k, h, w) = attrs["tile"], attrs["output_shape"]
    th, tw = -(-h // mh), -(-w // mw)
    y = t.reshape(mh, mw, k, n, th, tw).transpose(3, 2, 4, 0, 5, 1).reshape(n, k, th * mh, tw * mw)
    return [np.ascontiguousarray(y[:, :, :h, :w])]


register(OpDef("AssembleTiles", _assemble_infer, _assemble_ref,
               {"tile": Attr("ints"), "output_shape": Attr("ints")}, (1, 1), (1, 1),
               doc="Inverse layout of ExtractTiles for non-overlapping output tiles: (mh*mw, K*N*th*tw) -> "
                   "(N, K, H, W), tiles cut at the bottom/right edge (Tessera-internal: Winograd output)."))


# ---- LRN -----------------------------------------------------------------------------------


def _lrn_infer(ctx: InferContext) -> list[TensorType]:
    if ctx.type(0).rank < 3:
        raise ctx.error(f"needs (N, C, D1...), got {_s(ctx.type(0).shape)}")
    if ctx.attrs["size"] < 1:
        raise ctx.error(f"size must be >= 1, got {ctx.attrs['size']}")
    return same_as_input(ctx)


def _lrn_ref(inputs: Arrays, attrs: dict[str, Any], n_out: int) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    size = attrs["size"]
    xf = x.astype(np.float64)
    sq = xf * xf
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    padded = np.pad(sq, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    c = x.shape[1]
    total = sum(padded[:, i:i + c] for i in range(size))
    y = xf / (attrs["bias"] + attrs["alpha"] / size * total) ** attrs["beta"]
    return [y.astype(x.dtype)]


register(OpDef(
    "LRN", _lrn_infer, _lrn_ref,
    {"size": Attr("int"), "alpha": Attr("float", 1e-4), "beta": Attr("float", 0.75), "bias": Attr("float", 1.0)},
    (1, 1), (1, 1), lambda ctx, outs: numel(outs[0].shape) * (ctx.attrs["size"] + 4),
    doc="Local response normalization across channels.",
))
