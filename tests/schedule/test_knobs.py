"""The knob interface of tessera.schedule.rules: defaults reproduce the rules, every sampled
point of a stage's knob space replays and the compiled kernel matches a NumPy reference."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from tessera.codegen import render_kernel
from tessera.loop.computes.nn import pad_tensor
from tessera.loop.expr import call, const, maximum
from tessera.loop.stages import build_stages
from tessera.loop.te import Tensor, compute, placeholder, reduce_axis, rmax, rsum
from tessera.loop.te_eval import evaluate
from tessera.schedule.build import KernelBuilder
from tessera.schedule.rules import (
    default_knobs,
    default_schedule,
    knob_space,
    schedule_from_knobs,
    stage_kind,
)
from tessera.targets import load_target

TARGET = load_target("x86-avx2")  # 8 f32 lanes, as the test build flags (-march=haswell)
RNG = np.random.default_rng(11)


def _matmul(m: int, k: int, n: int) -> tuple[list[Tensor], list[Tensor]]:
    a, b, bias = placeholder((m, k), "f32", "a"), placeholder((k, n), "f32", "b"), placeholder((n,), "f32", "bias")

    def body(i, j):
        r = reduce_axis(k, "k")
        return rsum(a[i, r[0]] * b[r[0], j], r)

    mm = compute((m, n), body, "mm")
    out = compute((m, n), lambda i, j: maximum(mm[i, j] + bias[j], const(0.0, "f32")), "relu")
    return [a, b, bias], [out]


def _conv(cin: int, cout: int, hw: int, ksize: int) -> tuple[list[Tensor], list[Tensor]]:
    x, w = placeholder((1, cin, hw, hw), "f32", "x"), placeholder((cout, cin, ksize, ksize), "f32", "w")
    p = ksize // 2
    xp = pad_tensor(x, [0, 0, p, p], [1, cin, hw + 2 * p, hw + 2 * p], const(0.0, "f32"), "xpad")

    def body(n, co, h, ww):
        ci, kh, kw = reduce_axis(cin, "ci"), reduce_axis(ksize, "kh"), reduce_axis(ksize, "kw")
        return rsum(xp[n, ci[0], h + kh[0], ww + kw[0]] * w[co, ci[0], kh[0], kw[0]], ci, kh, kw)

    return [x, w], [compute((1, cout, hw, hw), body, "conv")]


def _elementwise(rows: int, cols: int) -> tuple[list[Tensor], list[Tensor]]:
    x, y = placeholder((rows, cols), "f32", "x"), placeholder((cols,), "f32", "y")
    return [x, y], [compute((rows, cols), lambda i, j: call("tanh", x[i, j]) * y[j] + const(1.0, "f32"), "ew")]


def _softmax(rows: int, cols: int) -> tuple[list[Tensor], list[Tensor]]:
    x = placeholder((rows, cols), "f32", "x")

    def mx(i):
        r = reduce_axis(cols, "c")
        return rmax(x[i, r[0]], r)

    m = compute((rows,), mx, "max")

    def den(i):
        r = reduce_axis(cols, "c")
        return rsum(call("exp", x[i, r[0]] - m[i]), r)

    d = compute((rows,), den, "den")
    return [x], [compute((rows, cols), lambda i, j: call("exp", x[i, j] - m[i]) / d[i], "softmax")]


CASES = {
    "matmul": lambda: _matmul(24, 40, 36),
    "matmul_exact": lambda: _matmul(16, 64, 32),
    "matmul_prime_rows": lambda: _matmul(13, 24, 40),
    "conv3x3": lambda: _conv(8, 12, 10, 3),
    "conv1x1": lambda: _conv(16, 8, 8, 1),
    "conv3x3_small_image": lambda: _conv(8, 32, 3, 3),
    "elementwise": lambda: _elementwise(6, 48),
    "softmax": lambda: _softmax(5, 40),
}


def _points(space: dict[str, list], default: dict, sample: int, seed: int) -> list[dict]:
    """The default, each knob's every value alone, and a random sample of full combinations."""
    pts = [dict(default)]
    for k, vals in space.items():
        pts += [{**default, k: v} for v in vals if v != default[k]]
    rnd = random.Random(seed)
    total = 1
    for vals in space.values():
        total *= len(vals)
    if total <= sample:
        pts += [dict(zip(space, combo, strict=True)) for combo in itertools.product(*space.values())]
    else:
        pts += [{k: rnd.choice(v) for k, v in space.items()} for _ in range(sample)]
    return pts


@pytest.mark.parametrize("case", sorted(CASES))
def test_knob_space_points_are_correct(build, case: str) -> None:
    inputs, outputs = CASES[case]()
    stages = build_stages(outputs)
    spaces = [knob_space(st, TARGET) for st in stages]
    defaults = [default_knobs(st, TARGET) for st in stages]
    for st, space, d in zip(stages, spaces, defaults, strict=True):
        assert json.loads(json.dumps(space)) == space and json.loads(json.dumps(d)) == d
        assert all(d[k] in space[k] for k in space) and set(d) == set(space)
        assert schedule_from_knobs(st, TARGET, frozenset(), d) == default_schedule(st, TARGET)
    # vary one stage at a time (the others at their defaults)
    kernels, schedules = [], []
    for s_idx, st in enumerate(stages):
        for p_idx, point in enumerate(_points(spaces[s_idx], defaults[s_idx], 10, s_idx)):
            scheds = {o.name: default_schedule(o, TARGET) for o in stages}
            scheds[st.name] = schedule_from_knobs(st, TARGET, frozenset(), point)
            name = f"k_{s_idx}_{p_idx}"
            kernels.append(KernelBuilder(name, inputs, outputs).build(stages, scheds))
            schedules.append(point)
    feeds = [RNG.standard_normal(t.shape).astype(np.float32) for t in inputs]
    want = evaluate(outputs, list(zip(inputs, feeds, strict=True)))
    mod = build(kernels)
    for kern, point in zip(kernels, schedules, strict=True):
        ws = [np.zeros(b.shape, np.float32) for b in kern.params[len(inputs) + len(outputs):]]
        ws = ws[:kern.attrs["workspace"]]
        packed = [np.ascontiguousarray(a) for a in kern.attrs["packed_constants"]]
        outs = [np.full(o.shape, np.nan, np.float32) for o in outputs]
        mod.run(kern, [*feeds, *outs, *ws, *packed])
        for got, w in zip(outs, want, strict=True):
            np.testing.assert_allclose(got, w, rtol=2e-5, atol=2e-5, err_msg=f"{case} {point}")


def test_kinds_and_tiled_knobs() -> None:
    _, outs = _conv(8, 12, 10, 3)
    (st,) = build_stages(outs)
    assert stage_kind(st) == "tiled"
    space = knob_space(st, TARGET)
    assert {"fuse_v", "swap", "tile", "order", "kc", "parallel_depth", "pack0", "pack1"} <= set(space)
    regs = TARGET.vector_registers
    assert all(mr * nv + nv + 1 <= regs for mr, nv in space["tile"])
    assert [5, 2] in space["tile"]  # rows padded (12 % 5): no operand that uses v uses the output channel
    assert all(kc == 0 or 8 % kc == 0 for kc in space["kc"]) and len(space["kc"]) > 1
    _, outs = _conv(8, 32, 3, 3)  # 9 pixels: vectors along the 32 output channels waste fewer lanes
    (st,) = build_stages(outs)
    assert default_knobs(st, TARGET)["swap"] is True
    _, outs = _softmax(4, 16)
    assert [stage_kind(s) for s in build_stages(outs)] == ["reduction", "reduction", "elementwise"]


def test_depthwise_convolution_is_a_plain_reduction() -> None:
    """No output axis indexes the weights without the input: a register tile would reuse nothing."""
    c, hw = 16, 12
    x, w = placeholder((1, c, hw, hw), "f32", "x"), placeholder((c, 1, 3, 3), "f32", "w")
    xp = pad_tensor(x, [0, 0, 1, 1], [1, c, hw + 2, hw + 2], const(0.0, "f32"), "xpad")

    def body(n, ch, h, ww):
        kh, kw = reduce_axis(3, "kh"), reduce_axis(3, "kw")
        return rsum(xp[n, ch, h + kh[0], ww + kw[0]] * w[ch, 0, kh[0], kw[0]], kh, kw)

    (st,) = build_stages([compute((1, c, hw, hw), body, "dwconv")])
    assert stage_kind(st) == "reduction"
    _, outs = _conv(c, c, hw, 3)
    assert stage_kind(build_stages(outs)[0]) == "tiled"


def test_bad_knobs_are_rejected() -> None:
    _, outs = _matmul(16, 32, 32)
    (st,) = build_stages(outs)
    with pytest.raises(ValueError, match="unknown knob 'bogus'"):
        schedule_from_knobs(st, TARGET, frozenset(), {"bogus": 1})
    with pytest.raises(ValueError, match="knob 'tile' = \\[7, 4\\] is not a candidate"):
        schedule_from_knobs(st, TARGET, frozenset(), {"tile": [7, 4]})



def test_reduction_attaches_to_a_broadcasting_consumer() -> None:
    # the consumer reads the reduction at [0, j] on an extent-1 axis (NumPy broadcasting): still its own index
    x, w, r = placeholder((1, 16), "f32", "x"), placeholder((16, 32), "f32", "w"), placeholder((1, 32), "f32", "r")

    def body(i, j):
        k = reduce_axis(16, "k")
        return rsum(x[i, k[0]] * w[k[0], j], k)

    mm = compute((1, 32), body, "mm")
    out = compute((1, 32), lambda i, j: mm[const(0), j] + r[i, j], "add")
    (st,) = build_stages([out])
    assert st.reduce is not None and st.acc_ref is mm


def test_elementwise_fuses_short_inner_axes_into_vector_code() -> None:
    x = placeholder((3, 12, 12), "f32", "x")
    outs = [compute((3, 12, 12), lambda a, b, c: x[a, b, c] * const(2.0, "f32"), "dbl")]
    (st,) = build_stages(outs)
    knobs = default_knobs(st, TARGET)
    assert knobs["fuse_inner"] == 1 and knobs["vector"] == 8  # 12 * 12 = 144 = 18 vectors of 8
    kern = KernelBuilder("dbl", [x], outs).build([st], {st.name: default_schedule(st, TARGET)})
    src = render_kernel(kern, {"f32": 8})
    assert "tsr_f32x8" in src and "/" not in src.split("{", 1)[1]  # vector code, no div/mod index math


def test_elementwise_does_not_fuse_axes_into_per_lane_index_divisions() -> None:
    # a per-channel bias over 7x7 maps: 7 * 7 is no multiple of the lanes, and fusing the channel axis
    # too would make the vector lanes recompute c = f // 49 for the bias load (a gather)
    x, b = placeholder((4, 7, 7), "f32", "x"), placeholder((4,), "f32", "b")
    outs = [compute((4, 7, 7), lambda c, h, w: x[c, h, w] + b[c], "bias")]
    (st,) = build_stages(outs)
    assert default_knobs(st, TARGET)["fuse_inner"] == 0
    kern = KernelBuilder("bias", [x, b], outs).build([st], {st.name: default_schedule(st, TARGET)})
    src = render_kernel(kern, {"f32": 8})
    assert "/ 49" not in src and "% 49" not in src
    x = placeholder((4, 6, 4), "f32", "x")
    outs = [compute((4, 6, 4), lambda c, h, w: x[c, h, w] + b[c], "bias")]  # h*w = 24 = 3 vectors: affine
    (st,) = build_stages(outs)
    assert default_knobs(st, TARGET)["fuse_inner"] == 1


def test_swap_replaces_a_gather_pack_by_constant_panels() -> None:
    # a padded 3x3 conv with a long reduction (32 * 9 = 288): with constant weights the vectors run
    # along the output channels (weights pre-packed) instead of packing the activation's im2col per call
    (x, w), outs = _conv(32, 16, 16, 3)
    (st,) = build_stages(outs)
    assert default_knobs(st, TARGET, frozenset({w}))["swap"] is True
    assert default_knobs(st, TARGET)["swap"] is False  # run-time weights would need packing too
    (x, w), outs = _conv(16, 16, 16, 3)  # reduction of 144: the strided epilogue would not pay
    (st,) = build_stages(outs)
    assert default_knobs(st, TARGET, frozenset({w}))["swap"] is False
