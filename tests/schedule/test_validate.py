"""Schedule legality (tessera.schedule.validate): every schedule the rules make passes; steps a
tuning record could carry that would crash, fail to build, race or read out of bounds do not."""

from __future__ import annotations

import random

import pytest

from tessera.loop.stages import Stage, build_stages
from tessera.schedule.primitives import Step
from tessera.schedule.rules import default_schedule, knob_space, schedule_from_knobs
from tessera.schedule.validate import ScheduleError, validate_steps
from tessera.targets import load_target

from .test_knobs import CASES, _elementwise, _matmul, _points

TARGETS = [load_target("x86-avx2"), load_target("x86-avx512"), load_target("arm-neon")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rule_schedule_is_legal(case: str) -> None:
    _, outputs = CASES[case]()
    n = 0
    for target in TARGETS:
        for k, st in enumerate(build_stages(outputs)):
            space = knob_space(st, target)
            default = {kk: v[0] for kk, v in space.items()}
            for point in _points(space, default, 40, k):
                validate_steps(st, schedule_from_knobs(st, target, frozenset(), point))
                n += 1
    assert n > 10


def _stage(kind: str) -> Stage:
    outs = {"matmul": lambda: _matmul(24, 40, 36)[1], "elementwise": lambda: _elementwise(6, 48)[1],
            "big": lambda: _matmul(4, 200, 8)[1], "wide": lambda: _matmul(200, 8, 100)[1]}[kind]()
    return build_stages(outs)[0]


def _steps(*items: list[object]) -> list[Step]:
    return [Step(str(x[0]), tuple(x[1:])) for x in items]


# loop names of the matmul stage: spatial i, j; reduction k (actual names vary: taken from the stage)
ST = _stage("matmul")
MATMUL_DEFAULT = default_schedule(ST, TARGETS[0])
I, J = (a.name for a in ST.tensor.axes)
R = ST.reduce.axes[0].name  # type: ignore[union-attr]


@pytest.mark.parametrize(("steps", "message"), [
    ([["split", "nope", 4]], "no loop 'nope'"),
    ([["split", I, 0]], "split factor 0 outside 1..64"),
    ([["split", I, 10_000]], "split factor 10000 outside"),
    ([["split", I, True]], "True is not an integer"),
    ([["split", I]], "split takes 2 argument"),
    ([["fuse", J, R]], "cannot fuse a spatial loop with a reduction loop"),
    ([["fuse", J, I]], "fuse needs adjacent loops"),
    ([["reorder", I, I]], "reorder names a loop twice"),
    ([["reorder"]], "reorder takes one or more loop names"),
    ([["parallel", R]], f"parallel reduction loop {R}"),
    ([["parallel", I], ["parallel", J]], "2 parallel loops"),
    ([["reorder", R, I], ["parallel", I]], "parallel loop .* is inside reduction loop"),
    ([["vectorize", I]], f"vectorized loop {I} is not the innermost loop"),
    ([["vectorize", J], ["reorder", J, R]], "is not the innermost loop"),
    ([["tensorize", "mma"]], "not a CPU schedule primitive"),
    ([["cache_write", ""], ["cache_write", ""]], "a second cache_write"),
    ([["cache_write", J], ["fuse", I, J]], f"cache_write position '{J}' is not a loop"),
    ([["pack", 2, J, 40, 8]], "factor 2 out of range"),
    ([["pack", 1, J, 40, 8], ["pack", 1, J, 40, 8]], "factor 1 is packed twice"),
    ([["pack", 1, R, 40, 8]], f"pack axis {R} is a reduction loop"),
    ([["pack", 0, J, 40, 8]], f"factor 0 does not depend on the pack axis {J}"),
    ([["pack", 1, J, 8, 8]], f"padded extent 8 does not cover loop {J} of extent 36 in tiles of 8 .expected 40."),
    ([["pack", 1, J, 48, 8]], "padded extent 48 does not cover"),
    ([["pack", 1, J, 40, -8]], "must be positive"),
    ([["pack", 1, J, 40, 8], ["split", J, 7]], f"panel packed along {J} is read at {J} in \\[0, 41\\], outside 0..39"),
    ([["pack", 1, J, 40, 8], ["split", R, 3]], f"is read at {R} in \\[0, 41\\], outside 0..39"),
])
def test_illegal_steps(steps: list[list[object]], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        validate_steps(ST, _steps(*steps))


def test_unroll_and_vector_limits_and_other_kinds() -> None:
    big = _stage("big")
    r = big.reduce.axes[0].name  # type: ignore[union-attr]
    with pytest.raises(ScheduleError, match=f"unrolled loop {r} has 200 iterations .at most 64."):
        validate_steps(big, _steps(["unroll", r]))
    wide = _stage("wide")
    with pytest.raises(ScheduleError, match="accumulator tile of 20000 elements .at most 16384."):
        validate_steps(wide, _steps(["cache_write", ""]))  # one local array for the whole output
    ew = _stage("elementwise")
    a, b = (x.name for x in ew.tensor.axes)
    with pytest.raises(ScheduleError, match="cache_write on a stage without a reduction"):
        validate_steps(ew, _steps(["cache_write", ""]))
    with pytest.raises(ScheduleError, match="pack needs a sum reduction"):
        validate_steps(ew, _steps(["pack", 0, b, 48, 8]))
    with pytest.raises(ScheduleError, match=f"stage {ew.name}, step 1 fuse.*: fuse needs adjacent loops"):
        validate_steps(ew, _steps(["split", b, 8], ["fuse", a, f"{b}_i"]))
    validate_steps(ew, _steps(["fuse", a, b], ["split", f"{a}_{b}", 32], ["vectorize", f"{a}_{b}_i"]))
    with pytest.raises(ScheduleError, match="has 96 lanes .at most 64."):
        validate_steps(ew, _steps(["fuse", a, b], ["split", f"{a}_{b}", 96], ["vectorize", f"{a}_{b}_i"]))
    with pytest.raises(ScheduleError, match="is not a schedule step"):
        validate_steps(ew, [["split", b, 8]])  # type: ignore[list-item]


def test_random_rule_points_of_the_matmul_replay() -> None:
    rng = random.Random(0)
    space = knob_space(ST, TARGETS[0])
    for _ in range(30):
        point = {k: rng.choice(v) for k, v in space.items()}
        validate_steps(ST, schedule_from_knobs(ST, TARGETS[0], frozenset(), point))
    assert validate_steps(ST, MATMUL_DEFAULT).packs is not None
