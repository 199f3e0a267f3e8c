"""Compute definitions: convolution, transposed convolution, dropout, resize, depth/space
shuffles, LRN. Also the sliding-window helpers shared with ``pooling.py``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tessera.errors import CompileError
from tessera.graph.dtypes import DType
from tessera.graph.ops.nn import Window, _convt_geometry, _resize_plan, make_window
from tessera.loop.compute import ComputeContext, compute_def
from tessera.loop.expr import Expr, binop, call, cast, const, is_int, logical_and, maximum, minimum, select
from tessera.loop.te import Tensor, compute, reduce_axis, rsum

# ---- helpers -----------------------------------------------------------------------------------


def clamp(e: Expr, lo: int, hi: int) -> Expr:
    """``e`` limited to ``[lo, hi]``: keeps guarded loads in bounds (both Select arms are evaluated)."""
    if hi <= lo:
        return const(lo)
    return minimum(maximum(e, lo), hi)


def pad_value(dtype: str, v: float) -> Expr:
    """A padding constant; +-inf becomes the integer range limit for integer dtypes."""
    if is_int(dtype) and np.isinf(v):
        if dtype == "bool":
            return const(v > 0, dtype)
        info = np.iinfo(DType(dtype).np)
        return const(int(info.min if v < 0 else info.max), dtype)
    return const(v, dtype)


def pad_tensor(x: Tensor, begins: Sequence[int], shape: Sequence[int], value: Expr, name: str = "pad") -> Tensor:
    """``xp[p] = x[p - begins]`` inside ``x``, ``value`` outside; ``shape`` is xp's shape (it may
    also cut ``x`` short at the end). Returns ``x`` itself when nothing is padded or cut."""
    if all(b == 0 for b in begins) and tuple(shape) == x.shape:
        return x

    def body(*p: Expr) -> Expr:
        conds = []
        idx = []
        for pi, b, n, m in zip(p, begins, x.shape, shape, strict=True):
            if b > 0 or b + n < m:
                conds.append(logical_and(pi.ge(b), pi.lt(b + n)))
                idx.append(clamp(pi - b, 0, n - 1))
            else:
                idx.append(pi - b)
        v = x[tuple(idx)]
        return select(logical_and(*conds), v, value) if conds else v

    return compute(shape, body, name)


def window_geometry(win: Window, spatial: Sequence[int]) -> list[tuple[int, int, int]]:
    """Per spatial axis: (pad_begin, out, padded length that every window tap falls within)."""
    geo = []
    for i, size in enumerate(spatial):
        pb, _, out = win.resolve(int(size), i)
        need = (out - 1) * win.strides[i] + win.dilations[i] * (int(win.kernel[i]) - 1) + 1
        geo.append((pb, out, need))
    return geo


def padded_input(x: Tensor, win: Window, value: Expr) -> tuple[Tensor, list[tuple[int, int, int]]]:
    """The (N, C, *spatial) input padded with ``value`` so that every window is in bounds."""
    geo = window_geometry(win, x.shape[2:])
    begins = [0, 0, *(pb for pb, _, _ in geo)]
    shape = [*x.shape[:2], *(need for _, _, need in geo)]
    return pad_tensor(x, begins, shape, value, "xpad"), geo


def window_taps(win: Window, out_idx: Sequence[Expr], hint: str = "k") -> tuple[list[tuple], list[Expr]]:
    """Reduction axes over the kernel and the padded-input positions ``o*s + k*d`` they read."""
    axes = [reduce_axis(int(k), hint) for k in win.kernel]
    pos = [o * s + a[0] * d for o, s, a, d in zip(out_idx, win.strides, axes, win.dilations, strict=True)]
    return axes, pos


def _bias_stage(y: Tensor, bias: Tensor | None, name: str) -> Tensor:
    if bias is None:
        return y
    return compute(y.shape, lambda n, c, *o: y[(n, c, *o)] + bias[c], name)


# ---- Conv / ConvTranspose ------------------------------------------------------------------------


@compute_def("Conv", "anchor")
def _conv(ctx: ComputeContext) -> list[Tensor]:
    x, w = ctx.input(0), ctx.input(1)
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    win = make_window(ctx.attrs, w.shape[2:])
    xp, _ = padded_input(x, win, const(0, x.dtype))
    body = conv_body(xp, win, int(ctx.attrs["group"]), w.shape, lambda co, ci, taps: w[(co, ci, *taps)])
    return [_bias_stage(compute(ctx.out_shape(), body, "conv"), bias, "conv_bias")]


def conv_body(xp: Tensor, win: Window, group: int, w_shape: tuple[int, ...],
              weight: Callable[[Expr, Expr, tuple[Expr, ...]], Expr]) -> Callable[..., Expr]:
    """Compute body of a (grouped) convolution over the padded input ``xp``: the sum over the group's
    input channels and the window taps of input x ``weight(co, ci, taps)``."""
    cin_g, cout_g = w_shape[1], w_shape[0] // group

    def body(n: Expr, co: Expr, *o: Expr) -> Expr:
        ci = reduce_axis(cin_g, "ci")
        taps, pos = window_taps(win, o)
        ch = ci[0] if group == 1 else (co // cout_g) * cin_g + ci[0]
        return rsum(xp[(n, ch, *pos)] * weight(co, ci[0], tuple(t[0] for t in taps)), ci, *taps)

    return body


@compute_def("ConvTranspose", "anchor")
def _conv_transpose(ctx: ComputeContext) -> list[Tensor]:
    x, w = ctx.input(0), ctx.input(1)
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    kernel = list(w.shape[2:])
    spatial = list(x.shape[2:])
    _, geo = _convt_geometry(ctx.attrs, spatial, kernel)
    win = make_window(ctx.attrs, kernel)
    group = int(ctx.attrs["group"])
    cin_g, mg = x.shape[1] // group, w.shape[1]

    # y[n, m, o] = sum over (ci, k) of x[n, c, i] * W[c, m % Mg, k] for the input positions i
    # with i*s + k*d == o + pad_begin, c = (m // Mg) * Cin_g + ci.
    def body(n: Expr, m: Expr, *o: Expr) -> Expr:
        ci = reduce_axis(cin_g, "ci")
        taps = [reduce_axis(k, "k") for k in kernel]
        conds: list[Expr] = []
        idx: list[Expr] = []
        for oi, (pb, _), t, s, d, size in zip(o, geo, taps, win.strides, win.dilations, spatial, strict=True):
            p = oi + int(pb) - t[0] * d
            if s == 1:
                conds.append(logical_and(p.ge(0), p.lt(size)))
                idx.append(clamp(p, 0, size - 1))
            else:
                conds.append(logical_and(p.ge(0), (p % s).eq(0), (p // s).lt(size)))
                idx.append(clamp(p // s, 0, size - 1))
        c = ci[0] if group == 1 else (m // mg) * cin_g + ci[0]
        mm = m if group == 1 else m % mg
        v = x[(n, c, *idx)] * w[(c, mm, *(t[0] for t in taps))]
        return rsum(select(logical_and(*conds), v, const(0, x.dtype)), ci, *taps)

    return [_bias_stage(compute(ctx.out_shape(), body, "conv_t"), bias, "conv_t_bias")]


# ---- Dropout -------------------------------------------------------------------------------------


@compute_def("Dropout", "injective", const_inputs=(1, 2))
def _dropout(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    def given(i: int) -> bool:
        return i < len(ctx.in_types) and ctx.in_types[i] is not None

    training = ctx.const(2)
    if given(2) and training is None:
        raise CompileError("Dropout: training_mode must be a compile-time constant")
    if training is not None and bool(training):
        ratio = ctx.const(1) if given(1) else np.array(0.5)
        if ratio is None or float(ratio) != 0.0:
            raise CompileError(f"Dropout node {ctx.name!r}: training mode (a random mask) has no compute "
                               "definition (inference and ratio 0 only)")
    outs = [compute(x.shape, lambda *i: x[i], "dropout")]
    if len(ctx.out_types) > 1:
        outs.append(compute(x.shape, lambda *i: const(True), "dropout_mask"))
    return outs


# ---- Resize --------------------------------------------------------------------------------------

_RESIZE_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric")


def _resize_coord(mode: str, o: Expr, n_in: int, n_out: int, scale: float,
                  roi: tuple[float, float] = (0.0, 1.0)) -> Expr:
    """Source coordinate (f64) of output index ``o``; same operation order as the reference."""
    of = cast(o, "f64")
    width = scale * n_in
    if mode == "tf_crop_and_resize":
        start, end = roi
        if width == 1:
            return const((end - start) * (n_in - 1) / 2 + start * (n_in - 1), "f64")
        return of * (end - start) * float(n_in - 1) / (width - 1) + start * (n_in - 1)
    if mode in ("half_pixel", "pytorch_half_pixel"):
        if mode == "pytorch_half_pixel" and n_out <= 1:
            return const(0.0, "f64")
        return (of + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = (n_in / 2) * (1 - n_out / width)
        return const(offset, "f64") + (of + 0.5) / scale - 0.5
    if mode == "align_corners":
        return of * float(n_in - 1) / (width - 1) if width != 1 else const(0.0, "f64")
    return of / scale  # asymmetric


def _resize_taps(attrs: dict, o: Expr, n_in: int, n_out: int, scale: float,
                 roi: tuple[float, float] = (0.0, 1.0)) -> list[tuple[Expr, Expr | None]]:
    """(input index, f64 weight or None for 1) pairs whose weighted sum gives output ``o``."""
    x = _resize_coord(attrs["coordinate_transformation_mode"], o, n_in, n_out, scale, roi)
    fl = call("floor", x)
    if attrs["mode"] == "nearest":
        nm = attrs["nearest_mode"]
        frac = x - fl
        if nm == "round_prefer_floor":
            idx = select(frac.gt(0.5), fl + 1.0, fl)
        elif nm == "round_prefer_ceil":
            idx = select(frac.ge(0.5), fl + 1.0, fl)
        elif nm == "floor":
            idx = fl
        elif nm == "ceil":
            idx = call("ceil", x)
        else:
            raise CompileError(f"Resize: unknown nearest_mode {nm!r}")
        return [(clamp(cast(idx, "i64"), 0, n_in - 1), None)]
    i0 = cast(fl, "i64")
    f = x - fl
    return [(clamp(i0, 0, n_in - 1), 1.0 - f), (clamp(i0 + 1, 0, n_in - 1), f)]


@compute_def("Resize", "injective", const_inputs=(1, 2, 3))
def _resize(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    a = ctx.attrs
    if a["coordinate_transformation_mode"] not in (*_RESIZE_COORD_MODES, "tf_crop_and_resize"):
        raise CompileError(f"Resize: coordinate_transformation_mode {a['coordinate_transformation_mode']!r} "
                           "has no compute definition")
    for i in (1, 2, 3):
        if i < len(ctx.inputs) and ctx.inputs[i] is not None and ctx.const(i) is None:
            raise CompileError(f"Resize: input {i} (roi/scales/sizes) must be a compile-time constant")
    out, scales = _resize_plan(list(x.shape), a, ctx.const(2), ctx.const(3))
    if tuple(out) != ctx.out_shape():
        raise CompileError(f"Resize: planned shape {out} differs from the inferred {list(ctx.out_shape())}")
    general = (a["mode"] == "cubic" or a["antialias"] or (a["exclude_outside"] and a["mode"] != "nearest")
               or a["coordinate_transformation_mode"] == "tf_crop_and_resize")
    if general or (a["mode"] == "linear" and is_int(x.dtype)):
        return [_resize_separable(x, a, out, scales, ctx.const(1))]
    resized = [k for k in range(x.ndim) if not (out[k] == x.shape[k] and scales[k] == 1.0)]

    def body(*o: Expr) -> Expr:
        per_axis = {k: _resize_taps(a, o[k], x.shape[k], out[k], scales[k]) for k in resized}
        total: Expr | None = None
        for combo in np.ndindex(*(len(per_axis[k]) for k in resized)):
            idx = list(o)
            weight: Expr | None = None
            for k, j in zip(resized, combo, strict=True):
                idx[k], wk = per_axis[k][j]
                if wk is not None:
                    weight = wk if weight is None else weight * wk
            v = x[tuple(idx)]
            term = v if weight is None else v * cast(weight, x.dtype)
            total = term if total is None else total + term
        assert total is not None
        return total

    return [compute(ctx.out_shape(), body, "resize")]


def _cubic(t: Expr, a: float) -> Expr:
    """The cubic convolution kernel (coefficient ``a``) at ``t`` (f64), as the reference."""
    t = call("abs", t)
    near = ((t * (a + 2) - (a + 3)) * t) * t + 1.0
    far = (((t * a - 5 * a) * t + 8 * a) * t) - 4 * a
    return select(t.le(1.0), near, select(t.lt(2.0), far, const(0.0, "f64")))


def _resize_separable(x: Tensor, a: dict, out: list[int], scales: list[float], roi_v: np.ndarray | None) -> Tensor:
    """Resize one axis at a time in float64 (as the reference): nearest is an index map; linear
    and cubic are a reduction over the kernel's taps around each source coordinate, with the
    weights renormalized over the taps for antialias (the kernel stretched by 1/scale when
    downsampling) and exclude_outside. tf_crop_and_resize maps through ``roi`` and writes
    ``extrapolation_value`` outside the input."""
    rank = x.ndim
    rois = [(0.0, 1.0)] * rank
    if roi_v is not None and roi_v.size:
        axes = [k % rank for k in a["axes"]] if a["axes"] is not None else list(range(rank))
        r = roi_v.astype(np.float64).ravel().tolist()
        for i, k in enumerate(axes):
            rois[k] = (r[i], r[i + len(axes)])
    ctm = a["coordinate_transformation_mode"]
    cur = compute(x.shape, lambda *i: cast(x[i], "f64"), "resize_f64")
    for k in range(rank):
        if out[k] == x.shape[k] and scales[k] == 1.0 and rois[k] == (0.0, 1.0):
            continue
        cur = _resample_axis(cur, k, out[k], scales[k], rois[k], a)
    crop = ctm == "tf_crop_and_resize"

    def final(*o: Expr) -> Expr:
        y = cur[o]
        if is_int(x.dtype):
            info = np.iinfo(DType(x.dtype).np)
            y = minimum(maximum(call("round", y), float(info.min)), float(info.max))
        if crop:
            changed = [k for k in range(rank) if not (out[k] == x.shape[k] and scales[k] == 1.0
                                                      and rois[k] == (0.0, 1.0))]
            in_sizes = [x.shape[k] for k in changed]
            outside = [_resize_coord(ctm, o[k], x.shape[k], out[k], scales[k], rois[k]) for k in changed]
            conds = [_any([c.lt(0.0), c.gt(float(n - 1))]) for n, c in zip(in_sizes, outside, strict=True)]
            if conds:
                y = select(_any(conds), const(float(a["extrapolation_value"]), "f64"), y)
        return cast(y, x.dtype)

    return compute(out, final, "resize")


def _any(conds: list[Expr]) -> Expr:
    e = conds[0]
    for c in conds[1:]:
        e = binop("or", e, c)
    return e


def _resample_axis(src: Tensor, k: int, n_out: int, scale: float, roi: tuple[float, float], a: dict) -> Tensor:
    n_in = src.shape[k]
    shape = list(src.shape)
    shape[k] = n_out
    ctm, mode = a["coordinate_transformation_mode"], a["mode"]
    if mode == "nearest":
        def nearest(*o: Expr) -> Expr:
            (idx, _), = _resize_taps(a, o[k], n_in, n_out, scale, roi)
            return src[(*o[:k], idx, *o[k + 1:])]
        return compute(shape, nearest, "resize_nearest")
    radius = 1 if mode == "linear" else 2
    sc = min(scale, 1.0) if a["antialias"] else 1.0
    reach = int(np.ceil(radius / sc)) + 1
    normalize = bool(a["antialias"] or a["exclude_outside"])

    def tap(o: Expr, j: Expr) -> tuple[Expr, Expr]:
        """Source index (f64, unclamped) and kernel weight of tap ``j`` of output ``o``."""
        xc = _resize_coord(ctm, o, n_in, n_out, scale, roi)
        t_idx = call("floor", xc) + (cast(j, "f64") - float(reach))
        t = (t_idx - xc) * sc
        w = maximum(1.0 - call("abs", t), 0.0) if mode == "linear" else _cubic(t, float(a["cubic_coeff_a"]))
        if a["exclude_outside"]:
            w = select(_any([t_idx.lt(0.0), t_idx.gt(float(n_in - 1))]), const(0.0, "f64"), w)
        return t_idx, w

    norm = None
    if normalize:
        def total(o: Expr) -> Expr:
            j = reduce_axis(2 * reach + 1, "tap")
            return rsum(tap(o, j[0])[1], j)
        norm = compute((n_out,), total, "resize_norm")

    def body(*o: Expr) -> Expr:
        j = reduce_axis(2 * reach + 1, "tap")
        t_idx, w = tap(o[k], j[0])
        if norm is not None:
            w = w / norm[(o[k],)]
        idx = clamp(cast(t_idx, "i64"), 0, n_in - 1)
        # a tap of weight 0 adds nothing, not 0 * x (NaN for an inf or NaN it does not use), as the reference
        return rsum(select(w.eq(0.0), const(0.0, src.dtype), w * src[(*o[:k], idx, *o[k + 1:])]), j)

    return compute(shape, body, "resize_taps")


# ---- DepthToSpace / SpaceToDepth -----------------------------------------------------------------


@compute_def("DepthToSpace", "injective")
def _depth_to_space(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    b = int(ctx.attrs["blocksize"])
    cout = x.shape[1] // (b * b)
    dcr = ctx.attrs["mode"] == "DCR"

    def body(n: Expr, c: Expr, h: Expr, w: Expr) -> Expr:
        bi, bj = h % b, w % b
        ch = (bi * b + bj) * cout + c if dcr else c * (b * b) + bi * b + bj
        return x[n, ch, h // b, w // b]

    return [compute(ctx.out_shape(), body, "depth_to_space")]


@compute_def("SpaceToDepth", "injective")
def _space_to_depth(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    b = int(ctx.attrs["blocksize"])
    cin = x.shape[1]
    dcr = ctx.attrs["mode"] == "DCR"

    def body(n: Expr, co: Expr, h: Expr, w: Expr) -> Expr:
        if dcr:
            bi, bj, c = co // (b * cin), (co // cin) % b, co % cin
        else:
            bi, bj, c = (co // b) % b, co % b, co // (b * b)
        return x[n, c, h * b + bi, w * b + bj]

    return [compute(ctx.out_shape(), body, "space_to_depth")]


@compute_def("ExtractTiles", "injective")
def _extract_tiles(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    (_, kw), (sh, sw), (pt, pl, pb, pr) = ctx.attrs["kernel_shape"], ctx.attrs["strides"], ctx.attrs["pads"]
    xp = pad_tensor(x, [0, 0, pt, pl], [*x.shape[:2], x.shape[2] + pt + pb, x.shape[3] + pl + pr], const(0, x.dtype))

    def body(q: Expr, c: Expr, n: Expr, i: Expr, j: Expr) -> Expr:
        return xp[n, c, i * sh + q // kw, j * sw + q % kw]

    return [compute(ctx.out_shape(), body, "extract_tiles")]


@compute_def("AssembleTiles", "injective")
def _assemble_tiles(ctx: ComputeContext) -> list[Tensor]:
    t = ctx.input(0)
    (mh, mw), (n, _, h, w) = ctx.attrs["tile"], ctx.attrs["output_shape"]
    th, tw = -(-h // mh), -(-w // mw)

    def body(b: Expr, k: Expr, y: Expr, x: Expr) -> Expr:
        return t[(y % mh) * mw + x % mw, ((k * n + b) * th + y // mh) * tw + x // mw]

    return [compute(ctx.out_shape(), body, "assemble_tiles")]


# ---- LRN -----------------------------------------------------------------------------------------


@compute_def("LRN", "reduction")
def _lrn(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    size = int(ctx.attrs["size"])
    alpha, beta, bias = float(ctx.attrs["alpha"]), float(ctx.attrs["beta"]), float(ctx.attrs["bias"])
    lo = (size - 1) // 2
    nc = x.shape[1]
    dt = x.dtype

    def square_sum(n: Expr, c: Expr, *rest: Expr) -> Expr:
        j = reduce_axis(size, "j")
        src = c - lo + j[0]
        v = x[(n, clamp(src, 0, nc - 1), *rest)]
        return rsum(select(logical_and(src.ge(0), src.lt(nc)), v * v, const(0, dt)), j)

    sq = compute(x.shape, square_sum, "lrn_sum")

    def norm(*i: Expr) -> Expr:
        den = call("pow", const(bias, dt) + const(alpha / size, dt) * sq[i], const(beta, dt))
        return x[i] / den

    return [compute(x.shape, norm, "lrn")]
