"""Default schedules from generic rules driven by the target description.

No rule names an operator or a model: decisions come from the stage's structure (its axes,
its reduction, how each factor of the reduction body is indexed) and from the target
(vector lanes per dtype, vector registers, cores).

- Elementwise stages: the innermost axis is split by the vector width and vectorized, outer
  axes are fused into one parallel loop.
- Reductions whose body is a product of operands (matmul, convolution...): register tiling.
  The innermost output axis (fused with its neighbours while they are short) is the vector
  axis ``v``; an axis ``m`` that only the broadcast operand depends on is unrolled ``mr``
  times; the ``mr x nr`` accumulator tile lives in registers (cache_write); operands that
  are not contiguous along ``v`` are packed (cache_read) into a zero-padded layout; the
  loops outside the tile are fused into one parallel loop.
- Other reductions: outer spatial axes parallel, a scalar accumulator, reduction innermost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tessera.loop.expr import Expr, Load, Var, free_vars, loads_in, stride_along, substitute
from tessera.loop.stages import Stage
from tessera.schedule.build import product_factors, stage_nest
from tessera.schedule.primitives import LoopNest, Step, replay


class TargetInfo(Protocol):
    vector_registers: int

    def lanes(self, dtype: str) -> int: ...

    def effective_cores(self) -> int: ...


@dataclass(frozen=True)
class TileChoice:
    mr: int
    nv: int  # vectors per row of the tile


VECTOR_DTYPES = ("f32",)
MIN_TILED_REDUCTION = 8  # reduction length below which register tiling does not pay
PACK_MIN_REUSE = 32  # tile rows that must re-read a contiguous activation panel to pay for packing it


def default_schedule(stage: Stage, target: TargetInfo, constants: frozenset[Any] = frozenset()) -> list[Step]:
    """The rule-based schedule of one stage. ``constants``: placeholders known at compile time
    (their packed layouts cost nothing at run time)."""
    if stage.reduce is None:
        return _elementwise(stage, target)
    if _tileable(stage):
        return _tiled_reduction(stage, target, constants)
    return _simple_reduction(stage, target)


def _parallel_outer(nest: LoopNest, names: list[str], steps: list[Step]) -> str | None:
    """Fuse the given adjacent outer loops into one and mark it parallel; returns its name."""
    if not names:
        return None
    cur = names[0]
    for n in names[1:]:
        step = Step("fuse", (cur, n))
        nest.apply(step)
        steps.append(step)
        cur = f"{cur}_{n}"
    step = Step("parallel", (cur,))
    nest.apply(step)
    steps.append(step)
    return cur


def _elementwise(stage: Stage, target: TargetInfo) -> list[Step]:
    nest = stage_nest(stage)
    steps: list[Step] = []
    axes = [lp.name for lp in nest.loops]
    if not axes:
        return steps
    lanes = target.lanes(stage.tensor.dtype) if stage.tensor.dtype in VECTOR_DTYPES else 1
    last = axes[-1]
    outer = axes[:-1]
    ext = nest.loop(last).extent
    if lanes > 1 and ext % lanes == 0 and ext >= lanes:
        for s in (Step("split", (last, lanes)), Step("vectorize", (f"{last}_i",))):
            nest.apply(s)
            steps.append(s)
        outer = [*outer, f"{last}_o"]
    elif not outer:
        outer = [last]
    _parallel_outer(nest, outer, steps)
    return steps


def _simple_reduction(stage: Stage, target: TargetInfo) -> list[Step]:
    nest = stage_nest(stage)
    steps: list[Step] = []
    spatial = [lp.name for lp in nest.loops if not lp.reduce]
    at = _parallel_outer(nest, spatial, steps)
    steps.append(Step("cache_write", (at or "",)))
    return steps


def _tileable(stage: Stage) -> bool:
    red = stage.reduce
    assert red is not None
    if red.combiner != "sum" or stage.tensor.dtype not in VECTOR_DTYPES or red.dtype not in VECTOR_DTYPES:
        return False
    n = 1
    for e in red.extents:
        n *= e
    out = 1
    for e in stage.tensor.shape:
        out *= e
    if n < MIN_TILED_REDUCTION or out < 64:
        return False
    # a contraction: the innermost output axis is used by some factor and not by another (the
    # broadcast operand), as in matmul and convolution; not a row statistic like a variance
    inner = [a.name for a, e in zip(stage.tensor.axes, stage.tensor.shape, strict=True) if e > 1]
    if not inner:
        return False
    uses = [inner[-1] in free_vars(f) for f in product_factors(red.body)]
    return any(uses) and not all(uses)


def _address(load: Load) -> Expr:
    """Row-major linear address of a load (for contiguity analysis)."""
    shape = load.tensor.shape
    addr: Expr = load.indices[0] if load.indices else Var("_zero")
    for idx, n in zip(load.indices[1:], shape[1:], strict=True):
        addr = addr * n + idx
    return addr


def _contiguous(factor: Expr, var: str, env: dict[str, Expr]) -> bool:
    """Every load in ``factor`` that depends on ``var`` moves by exactly one element per step
    of ``var``, and ``factor`` is a plain load (no selects/arith that would need a gather)."""
    loads = [ld for ld in loads_in(factor) if var in free_vars(substitute(_address(ld), env))]
    if not loads:
        return True
    if not isinstance(factor, Load):
        return False
    return all(stride_along(substitute(_address(ld), env), var) == 1 for ld in loads)


def _choose_tile(m_extent: int, v_extent: int, lanes: int, regs: int, padded_ok: bool) -> TileChoice:
    best: tuple[float, int, int] | None = None
    for nv in (4, 3, 2, 1):
        nr = nv * lanes
        if v_extent % nr and not padded_ok:
            continue
        v_eff = v_extent / (-(-v_extent // nr) * nr)
        for mr in (8, 6, 5, 4, 3, 2, 1):
            if mr * nv + nv + 1 > regs or m_extent % mr:
                continue
            score = mr * nv * v_eff * (1.0 if nr <= v_extent else 0.5)
            if best is None or score > best[0]:
                best = (score, mr, nv)
    if best is None:
        return TileChoice(1, 1)
    return TileChoice(best[1], best[2])


def _tiled_reduction(stage: Stage, target: TargetInfo, constants: frozenset[Any]) -> list[Step]:
    red = stage.reduce
    assert red is not None
    lanes = target.lanes(stage.tensor.dtype)
    nest = stage_nest(stage)
    steps: list[Step] = []

    def do(step: Step) -> None:
        nest.apply(step)
        steps.append(step)

    spatial = [lp.name for lp in nest.loops if not lp.reduce]
    reduce = [lp.name for lp in nest.loops if lp.reduce]
    factors = product_factors(red.body)
    # vector axis: the innermost output axis, fused with its outer neighbours while it is short
    # and every factor uses the two axes alike (both or neither)
    v = spatial[-1]
    while len(spatial) >= 2 and nest.loop(v).extent < 8 * lanes:
        prev = spatial[-2]
        if any((prev in free_vars(f)) != (v in free_vars(f)) for f in factors):
            break
        do(Step("fuse", (prev, v)))
        v = f"{prev}_{v}"
        spatial = [*spatial[:-2], v]
    env = dict(nest.axis_expr)
    v_extent = nest.loop(v).extent
    v_dependent = [k for k, f in enumerate(factors) if any(v in free_vars(env_sub) for env_sub in
                                                              [substitute(f, env)])]
    non_contig = [k for k in v_dependent if not _contiguous(factors[k], v, env)]
    # m axis: the innermost other spatial axis used by a factor that does not use v
    m = None
    for cand in reversed(spatial[:-1]):
        if nest.loop(cand).extent > 1 and any(
            cand in free_vars(substitute(f, env)) and v not in free_vars(substitute(f, env)) for f in factors
        ):
            m = cand
            break
    m_extent = nest.loop(m).extent if m else 1
    tile = _choose_tile(m_extent, v_extent, lanes, target.vector_registers, padded_ok=True)
    exact = _choose_tile(m_extent, v_extent, lanes, target.vector_registers, padded_ok=False)
    if not non_contig and exact.mr * exact.nv >= 0.75 * tile.mr * tile.nv and v_extent % (exact.nv * lanes) == 0:
        tile = exact  # no padding needed: contiguous operands can be used in place
    nr = tile.nv * lanes
    padded = -(-v_extent // nr) * nr
    rows = 1
    for a in spatial:
        if a != v:
            rows *= nest.loop(a).extent
    to_pack = set(non_contig)
    for k in v_dependent:
        # panels: a constant operand is re-laid out for free at compile time; an activation is
        # worth copying when its panels are re-read by enough rows of the tile
        if padded != v_extent or _is_constant(factors[k], constants) or rows >= PACK_MIN_REUSE * tile.mr:
            to_pack.add(k)
    for k in sorted(to_pack):
        do(Step("pack", (k, v, padded, nr)))
    do(Step("split", (v, nr)))
    do(Step("split", (f"{v}_i", lanes)))
    v_o, v_io, v_ii = f"{v}_o", f"{v}_i_o", f"{v}_i_i"
    inner_m: list[str] = []
    if m and tile.mr > 1:
        do(Step("split", (m, tile.mr)))
        inner_m = [f"{m}_i"]
        m_outer = f"{m}_o"
        spatial = [m_outer if a == m else a for a in spatial]
    # panel-outer order: one packed panel of the v-operand is reused by every m block
    others = [a for a in spatial if a != v]
    m_blocks = [a for a in others if inner_m and a == f"{m}_o"]
    outer = [a for a in others if a not in m_blocks] + [v_o] + m_blocks
    do(Step("reorder", tuple(outer + reduce + inner_m + [v_io, v_ii])))
    for a in inner_m:
        do(Step("unroll", (a,)))
    do(Step("unroll", (v_io,)))
    do(Step("vectorize", (v_ii,)))
    at = _parallel_outer(nest, outer, steps)
    steps.append(Step("cache_write", (at or "",)))
    return steps


def _is_constant(factor: Expr, constants: frozenset[Any]) -> bool:
    loads = loads_in(factor)
    return bool(loads) and all(ld.tensor in constants for ld in loads)


def schedule_stages(stages: list[Stage], target: TargetInfo,
                    constants: frozenset[Any] = frozenset()) -> dict[str, list[Step]]:
    """Default schedules for every stage of a kernel, by stage name."""
    return {st.name: default_schedule(st, target, constants) for st in stages}


def check_replay(stage: Stage, steps: list[Step]) -> LoopNest:
    """Replay ``steps`` on the stage's fresh nest (raises if a step is invalid)."""
    return replay(stage_nest(stage), steps)
