"""Compute definitions: shape manipulation (Reshape & co, Transpose, Expand, Concat, Split, Pad,
Tile, CenterCropPad, Trilu, EyeLike) and the shape-valued ops normally folded before compile
(Shape, Size, ConstantOfShape, Range).

All shapes are static here; operands such as Reshape's shape or Pad's pads are compile-time
constants (``ctx.const``). Reshape-like ops only need the input and output shapes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tessera.errors import CompileError
from tessera.loop.compute import ComputeContext, compute_def
from tessera.loop.computes.common import broadcast_load
from tessera.loop.computes.nn import clamp
from tessera.loop.expr import Expr, Var, cast, const, is_int, logical_and, select, simplify
from tessera.loop.te import Tensor, compute

# ---- helpers -------------------------------------------------------------------------------------


def given(ctx: ComputeContext, i: int) -> bool:
    """Whether optional input ``i`` is present."""
    return i < len(ctx.in_types) and ctx.in_types[i] is not None


def const_input(ctx: ComputeContext, i: int, op: str, what: str) -> np.ndarray | None:
    """Constant input ``i`` (None when omitted); a CompileError if it is not a compile-time constant."""
    if not given(ctx, i):
        return None
    v = ctx.const(i)
    if v is None:
        raise CompileError(f"{op}: {what} (input {i}) must be a compile-time constant")
    return np.asarray(v)


def const_ints(ctx: ComputeContext, i: int, op: str, what: str) -> list[int] | None:
    v = const_input(ctx, i, op, what)
    return None if v is None else [int(x) for x in v.reshape(-1)]


def typed_const(v: float | int | bool, dtype: str) -> Expr:
    """A constant of ``dtype`` (bool, integer or float)."""
    if dtype == "bool":
        return const(bool(v), "bool")
    return const(int(v) if is_int(dtype) else float(v), dtype)


def _ranges(idx: Sequence[Expr], shape: Sequence[int]) -> dict[str, tuple[int, int]]:
    return {e.name: (0, max(d - 1, 0)) for e, d in zip(idx, shape, strict=True) if isinstance(e, Var)}


def reshape_index(in_shape: Sequence[int], out_shape: Sequence[int], out_idx: Sequence[Expr]) -> tuple[Expr, ...]:
    """Input index of the element at ``out_idx`` of a row-major reshape ``in_shape -> out_shape``.

    Dims are matched in groups of equal element count (``(2, 3, 4) -> (6, 4)`` maps the 6 to the
    2 and 3 only), so the index arithmetic stays local; unit dims are index 0."""
    idx: list[Expr] = [const(0)] * len(in_shape)
    if int(np.prod(in_shape)) == 0:
        return tuple(idx)
    ins = [k for k, d in enumerate(in_shape) if d != 1]
    outs = [k for k, d in enumerate(out_shape) if d != 1]
    pi = po = 0
    while pi < len(ins):
        gi, go = [ins[pi]], [outs[po]]
        ni, no = in_shape[ins[pi]], out_shape[outs[po]]
        while ni != no:
            if ni < no:
                pi += 1
                gi.append(ins[pi])
                ni *= in_shape[ins[pi]]
            else:
                po += 1
                go.append(outs[po])
                no *= out_shape[outs[po]]
        pi, po = pi + 1, po + 1
        if len(gi) == 1 and len(go) == 1:
            idx[gi[0]] = out_idx[go[0]]
            continue
        lin: Expr = const(0)
        for k in go:
            lin = lin * out_shape[k] + out_idx[k]
        stride = ni
        for n, k in enumerate(gi):
            stride //= in_shape[k]
            v = lin if stride == 1 else lin // stride
            idx[k] = v if n == 0 else v % in_shape[k]
    rng = _ranges(out_idx, out_shape)
    return tuple(simplify(e, rng) for e in idx)


def _reshape_like(ctx: ComputeContext, name: str) -> list[Tensor]:
    x = ctx.input(0)
    out = ctx.out_shape()
    return [compute(out, lambda *i: x[reshape_index(x.shape, out, i)], name)]


def _register_reshape_like(op: str, const_inputs: tuple[int, ...]) -> None:
    compute_def(op, "injective", const_inputs=const_inputs)(lambda ctx: _reshape_like(ctx, op.lower()))


for _op, _consts in (("Reshape", (1,)), ("Flatten", ()), ("Squeeze", (1,)), ("Unsqueeze", (1,)), ("Identity", ())):
    _register_reshape_like(_op, _consts)


@compute_def("Transpose", "injective")
def _transpose(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    perm = ctx.attrs["perm"]
    perm = list(range(x.ndim))[::-1] if perm is None else [p % max(x.ndim, 1) for p in perm]

    def body(*o: Expr) -> Expr:
        idx: list[Expr] = [const(0)] * x.ndim
        for k, p in enumerate(perm):
            idx[p] = o[k]
        return x[tuple(idx)]

    return [compute(ctx.out_shape(), body, "transpose")]


@compute_def("Expand", "injective", const_inputs=(1,))
def _expand(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    return [compute(ctx.out_shape(), lambda *i: broadcast_load(x, i), "expand")]


@compute_def("Tile", "injective", const_inputs=(1,))
def _tile(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    return [compute(ctx.out_shape(), lambda *i: x[tuple(
        const(0) if d == 1 else (o if d == n else o % d) for o, d, n in zip(i, x.shape, ctx.out_shape(), strict=True)
    )], "tile")]


# ---- Concat / Split ------------------------------------------------------------------------------


@compute_def("Concat", "injective")
def _concat(ctx: ComputeContext) -> list[Tensor]:
    xs = [t for t in ctx.inputs if t is not None]
    out = ctx.out_shape()
    axis = int(ctx.attrs["axis"]) % len(out)
    parts = [t for t in xs if t.shape[axis] > 0]
    if not parts:
        raise CompileError("Concat: every input is empty")

    def body(*i: Expr) -> Expr:
        # Nested selects from the last part backwards; loads are clamped since both arms are evaluated.
        offsets = np.cumsum([0] + [t.shape[axis] for t in parts]).tolist()
        last = parts[-1]
        acc: Expr = last[(*i[:axis], clamp(i[axis] - offsets[-2], 0, last.shape[axis] - 1), *i[axis + 1:])]
        for t, off, end in reversed(list(zip(parts[:-1], offsets[:-2], offsets[1:-1], strict=True))):
            v = t[(*i[:axis], clamp(i[axis] - off, 0, t.shape[axis] - 1), *i[axis + 1:])]
            acc = select(i[axis].lt(end), v, acc)
        return acc

    return [compute(out, body, "concat")]


@compute_def("Split", "injective", const_inputs=(1,))
def _split(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    axis = int(ctx.attrs["axis"]) % x.ndim
    outs = []
    off = 0
    for k in range(len(ctx.out_types)):
        shape = ctx.out_shape(k)
        outs.append(compute(shape, lambda *i, _o=off: x[(*i[:axis], i[axis] + _o, *i[axis + 1:])], f"split{k}_"))
        off += shape[axis]
    return outs


# ---- Pad / CenterCropPad -------------------------------------------------------------------------


def _pad_source(j: Expr, n: int, mode: str) -> tuple[Expr, Expr | None]:
    """Index in an axis of length ``n`` read at padded position ``j`` (relative to the first
    element), and the in-bounds condition for constant mode."""
    if mode == "constant":
        return clamp(j, 0, n - 1), logical_and(j.ge(0), j.lt(n))
    if mode == "edge":
        return clamp(j, 0, n - 1), None
    if mode == "wrap":
        return j % n, None
    if n == 1:  # reflect
        return const(0), None
    period = 2 * (n - 1)
    m = j % period
    return select(m.lt(n), m, period - m), None


@compute_def("Pad", "injective", const_inputs=(1, 3))
def _pad(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    mode = ctx.attrs["mode"]
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise CompileError(f"Pad: unknown mode {mode!r}")
    pads = const_ints(ctx, 1, "Pad", "pads")
    assert pads is not None
    axes = const_ints(ctx, 3, "Pad", "axes")
    axes = [a % x.ndim for a in axes] if axes is not None else list(range(x.ndim))
    widths = [(0, 0)] * x.ndim
    for j, ax in enumerate(axes):
        widths[ax] = (pads[j], pads[j + len(axes)])
    fill: Expr = typed_const(0, x.dtype)
    if mode == "constant" and given(ctx, 2):
        cv = ctx.const(2)
        if cv is not None:
            fill = typed_const(np.asarray(cv).reshape(-1)[0].item(), x.dtype) if np.asarray(cv).size else fill
        else:
            t = ctx.input(2)
            fill = t[tuple(const(0) for _ in t.shape)]

    def body(*i: Expr) -> Expr:
        idx: list[Expr] = []
        conds: list[Expr] = []
        for o, n, (b, e) in zip(i, x.shape, widths, strict=True):
            crop_b, crop_e = max(-b, 0), max(-e, 0)
            if b <= 0 and e <= 0:
                idx.append(o + crop_b)
                continue
            src, cond = _pad_source(o - max(b, 0), n - crop_b - crop_e, mode)
            idx.append(src + crop_b)
            if cond is not None:
                conds.append(cond)
        v = x[tuple(idx)]
        return select(logical_and(*conds), v, fill) if conds else v

    return [compute(ctx.out_shape(), body, "pad")]


@compute_def("CenterCropPad", "injective", const_inputs=(1,))
def _center_crop_pad(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    out = ctx.out_shape()

    def body(*i: Expr) -> Expr:
        idx: list[Expr] = []
        conds: list[Expr] = []
        for o, n, s in zip(i, x.shape, out, strict=True):
            if n >= s:
                idx.append(o + (n - s) // 2)
            else:
                lo = (s - n) // 2
                idx.append(clamp(o - lo, 0, n - 1))
                conds.append(logical_and(o.ge(lo), o.lt(lo + n)))
        v = x[tuple(idx)]
        return select(logical_and(*conds), v, typed_const(0, x.dtype)) if conds else v

    return [compute(out, body, "center_crop_pad")]


# ---- Trilu / EyeLike -----------------------------------------------------------------------------


@compute_def("Trilu", "injective", const_inputs=(1,))
def _trilu(ctx: ComputeContext) -> list[Tensor]:
    x = ctx.input(0)
    k_arr = const_input(ctx, 1, "Trilu", "k")
    k = int(k_arr.reshape(-1)[0]) if k_arr is not None else 0
    upper = bool(ctx.attrs["upper"])

    def body(*i: Expr) -> Expr:
        diag = i[-1] - i[-2]
        keep = diag.ge(k) if upper else diag.le(k)
        return select(keep, x[i], typed_const(0, x.dtype))

    return [compute(x.shape, body, "trilu")]


@compute_def("EyeLike", "injective")
def _eye_like(ctx: ComputeContext) -> list[Tensor]:
    dt = ctx.out_dtype()
    k = int(ctx.attrs["k"])
    return [compute(ctx.out_shape(), lambda i, j: select((j - i).eq(k), typed_const(1, dt), typed_const(0, dt)),
                    "eye_like")]


# ---- shape-valued ops (normally constant-folded) -------------------------------------------------


def _table(values: Sequence[float | int], dtype: str, i: Expr) -> Expr:
    """``values[i]`` for a short static list, as nested selects."""
    acc = typed_const(values[-1], dtype)
    for k in range(len(values) - 2, -1, -1):
        acc = select(i.eq(k), typed_const(values[k], dtype), acc)
    return acc


@compute_def("Shape", "injective")
def _shape(ctx: ComputeContext) -> list[Tensor]:
    in_t = ctx.in_types[0]
    assert in_t is not None
    rank = len(in_t.shape)
    start, end = ctx.attrs["start"], ctx.attrs["end"]
    end = rank if end is None else end
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = max(min(max(end + rank if end < 0 else end, 0), rank), start)
    dims = [int(d) for d in in_t.shape[start:end]]
    if not dims:
        return [compute((0,), lambda i: const(0, "i64"), "shape")]
    return [compute((len(dims),), lambda i: _table(dims, "i64", i), "shape")]


@compute_def("Size", "injective")
def _size(ctx: ComputeContext) -> list[Tensor]:
    in_t = ctx.in_types[0]
    assert in_t is not None
    n = int(np.prod([int(d) for d in in_t.shape]))
    return [compute((), lambda: const(n, "i64"), "size")]


@compute_def("ConstantOfShape", "injective", const_inputs=(0,))
def _constant_of_shape(ctx: ComputeContext) -> list[Tensor]:
    value = ctx.attrs["value"]
    v = np.asarray(value).reshape(-1)[0].item() if value is not None else 0.0
    dt = ctx.out_dtype()
    return [compute(ctx.out_shape(), lambda *i: typed_const(v, dt), "constant_of_shape")]


@compute_def("Range", "injective", const_inputs=(0, 1, 2))
def _range(ctx: ComputeContext) -> list[Tensor]:
    start, _, delta = (const_input(ctx, i, "Range", w) for i, w in enumerate(("start", "limit", "delta")))
    assert start is not None and delta is not None
    dt = ctx.out_dtype()
    if is_int(dt):
        s, d = int(start), int(delta)
        return [compute(ctx.out_shape(), lambda i: cast(i * d + s, dt), "range")]
    return [compute(ctx.out_shape(), lambda i: const(float(start), dt) + const(float(delta), dt) * cast(i, dt),
                    "range")]
