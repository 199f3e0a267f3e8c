"""Default schedules from generic rules driven by the target description, and the knob
space an auto-scheduler searches.

No rule names an operator or a model: decisions come from the stage's structure (its axes,
its reduction, how each factor of the reduction body is indexed) and from the target
(vector lanes per dtype, vector registers, cores, caches).

Every stage falls into one *kind* (by structure):

- ``elementwise`` (no reduction): short inner axes are fused until the innermost loop is a
  multiple of the vector width (while every load stays affine in it: no per-lane index
  divisions), which is split off and vectorized; outer axes are fused into one parallel loop.
- ``tiled`` (a sum whose body is a product of operands, e.g. matmul, convolution): register
  tiling. The innermost output axis (fused with its neighbours while they are short) is the
  vector axis ``v``; an axis ``m`` that only the broadcast operand depends on is unrolled
  ``mr`` times; the ``mr x nr`` accumulator tile lives in registers (cache_write). The two
  roles swap when vectors along ``m`` waste clearly fewer lanes (a convolution on a 7x7
  image vectorizes along its output channels). An exact tile (no padding) is preferred
  unless it is much smaller; a padded ``v`` packs (cache_read) the operands that use it into
  zero-padded panels, as do operands not contiguous along ``v``; a padded ``m`` packs the
  broadcast operands zero-padded along ``m``. The loops outside the tile are fused into one
  parallel loop. Optionally the outermost reduction loop is blocked (``kc``) so one block of
  the packed panel stays in cache while the ``m`` blocks sweep it; partial sums are kept in
  the output between blocks.
- ``reduction`` (any other reduction): just enough outer spatial axes fused into a parallel
  loop to feed every core, a scalar accumulator, reduction innermost; that innermost loop is
  vectorized (lane-parallel partial accumulators) when its loads are contiguous along it.

Knob interface (used by tessera.tune)
-------------------------------------
``knob_space(stage, target, constants)`` returns ``{knob: [candidate values...]}``;
``default_knobs(...)`` the values the generic rules pick; ``schedule_from_knobs(..., knobs)``
the primitive steps for any point of the space. ``default_schedule`` is exactly
``schedule_from_knobs(default_knobs(...))``. Values are JSON-serializable (ints, bools,
strings, ``[mr, nv]`` lists). Every combination of candidate values is valid by
construction: where knobs interact, the later one is clamped, so different points may
give the same schedule. Missing knobs take their default value; unknown knobs or values
outside the candidates raise ``ValueError``. Knobs by kind (``knob_space`` always has
``"kind": [kind]``):

``elementwise``
    ``fuse_inner``: how many outer axes are fused into the innermost one first (the
    default makes the innermost loop a multiple of the vector lanes).
    ``vector``: split factor of the innermost loop that is vectorized (0 = scalar); one, two
    or four vectors; a factor that does not divide the loop means scalar.
    ``parallel_depth``: how many outer loops (outermost first) are fused into the parallel
    loop (0 = serial; clamped to the number of outer loops).
``reduction``
    ``parallel_depth``: as above, over the spatial axes.
    ``vector``: the vector lanes (0 = an in-order scalar fold) with which the innermost
    reduction loop is vectorized: partial results per lane, folded at the end (a float
    sum/max/min whose loads along that axis are contiguous, at least one vector long).
    Offered and the default where possible: a sum is then reassociated (see
    :mod:`tessera.codegen.c`).
``tiled``
    ``fuse_v``: how many outer axes are fused into the vector axis (only axes that every
    operand uses alike with it).
    ``swap``: the row axis ``m`` becomes the vector axis and ``v`` the row axis (offered when
    some operand uses ``v`` but not ``m``); default when it wastes clearly fewer lanes, or
    wastes no more and replaces a per-call gather-pack of an activation by constant panels
    over a long reduction.
    ``tile``: ``[mr, nv]``: ``mr`` rows by ``nv`` vectors, with ``mr * nv + nv + 1`` at most
    the vector registers; ``mr`` divides the ``m`` extent unless no operand that uses ``v``
    uses ``m``: then the rows are padded and the operands that use ``m`` are packed
    zero-padded along it (bounds checks stay in the epilogue, outside the vector loop). A
    tile offered for the other orientation only is clamped to the largest ``mr`` that fits.
    ``pack<k>``: pack reduction factor ``k`` (one that depends on ``v``) into panels even
    when not needed (operands not contiguous along ``v`` or a padded tile force a pack).
    ``order``: ``"panel_outer"`` (one panel of the ``v`` operand is reused by every ``m``
    block) or ``"rows_outer"`` (``m`` blocks outside ``v`` blocks).
    ``kc``: block of the outermost reduction loop (0 = unblocked); divisors of its extent
    whose panel block (``kc`` x inner reduction x ``nr``) fits the L1 or L2 cache. The
    block loop is placed just inside the parallel loops, before the innermost outer loop.
    ``parallel_depth``: outer loops fused into the parallel loop (clamped to the loops
    outside the ``kc`` block loop when ``kc > 0``).
"""

from __future__ import annotations

import math
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
SWAP_MIN_GAIN = 0.1  # lane/row efficiency the swapped orientation must add to be the default
SWAP_MIN_REDUCTION = 256  # reduction length that amortizes a swapped epilogue (strided stores, transposed in registers)
EXACT_TILE_SHARE = 0.6  # an exact (unpadded) tile wins with at least this share of the padded tile's size
PACK_MIN_REUSE = 32  # tile rows that must re-read a contiguous activation panel to pay for packing it
MR_CHOICES = (8, 7, 6, 5, 4, 3, 2, 1)
NV_CHOICES = (4, 3, 2, 1)
DEFAULT_L1 = 32 * 1024  # used when a target description gives no caches
DEFAULT_L2 = 1024 * 1024

Knobs = dict[str, Any]


# ---- public interface ------------------------------------------------------------------------------


def stage_kind(stage: Stage) -> str:
    """``"elementwise"``, ``"tiled"`` or ``"reduction"`` (see the module docstring)."""
    if stage.reduce is None:
        return "elementwise"
    return "tiled" if _tileable(stage) else "reduction"


def knob_space(stage: Stage, target: TargetInfo, constants: frozenset[Any] = frozenset()) -> dict[str, list[Any]]:
    """Every knob of ``stage`` with its candidate values (the default value among them)."""
    kind = stage_kind(stage)
    if kind == "elementwise":
        space = _elementwise_space(stage, target)
    elif kind == "reduction":
        space = _reduction_space(stage, target)
    else:
        space = _tiled_space(stage, target)
    return {"kind": [kind], **space}


def default_knobs(stage: Stage, target: TargetInfo, constants: frozenset[Any] = frozenset()) -> Knobs:
    """The knob values the generic rules choose."""
    kind = stage_kind(stage)
    if kind == "elementwise":
        lanes = _lanes(stage, target)
        fuse = _elementwise_fuse(stage, lanes)
        ext = 1
        for e in stage.tensor.shape[len(stage.tensor.shape) - 1 - fuse:]:
            ext *= e
        vec = lanes if lanes > 1 and ext >= lanes and ext % lanes == 0 else 0
        return {"kind": kind, "fuse_inner": fuse, "vector": vec, "parallel_depth": len(stage.tensor.shape)}
    if kind == "reduction":
        return {"kind": kind, "parallel_depth": _enough_parallel(stage.tensor.shape, target),
                "vector": _reduction_space(stage, target)["vector"][-1]}
    return _tiled_defaults(stage, target, constants)


def schedule_from_knobs(stage: Stage, target: TargetInfo, constants: frozenset[Any], knobs: Knobs) -> list[Step]:
    """The primitive steps for one point of ``knob_space`` (missing knobs take defaults)."""
    full = _checked(stage, target, constants, knobs)
    kind = full["kind"]
    if kind == "elementwise":
        return _elementwise(stage, full)
    if kind == "reduction":
        return _simple_reduction(stage, full)
    return _tiled_reduction(stage, target, constants, full)


def default_schedule(stage: Stage, target: TargetInfo, constants: frozenset[Any] = frozenset()) -> list[Step]:
    """The rule-based schedule of one stage. ``constants``: placeholders known at compile time
    (their packed layouts cost nothing at run time)."""
    return schedule_from_knobs(stage, target, constants, default_knobs(stage, target, constants))


def schedule_stages(stages: list[Stage], target: TargetInfo,
                    constants: frozenset[Any] = frozenset()) -> dict[str, list[Step]]:
    """Default schedules for every stage of a kernel, by stage name."""
    return {st.name: default_schedule(st, target, constants) for st in stages}


def check_replay(stage: Stage, steps: list[Step]) -> LoopNest:
    """Replay ``steps`` on the stage's fresh nest (raises if a step is invalid)."""
    return replay(stage_nest(stage), steps)


_SPACES: dict[tuple[int, int, frozenset[Any]], tuple[Stage, TargetInfo, dict[str, list[Any]], Knobs]] = {}


def _space_and_defaults(stage: Stage, target: TargetInfo,
                        constants: frozenset[Any]) -> tuple[dict[str, list[Any]], Knobs]:
    """``knob_space`` and ``default_knobs`` of a stage, memoized: a search replays many points of
    one stage, and deriving the space dominates the cost of each."""
    key = (id(stage), id(target), constants)
    hit = _SPACES.get(key)
    if hit is not None and hit[0] is stage and hit[1] is target:
        return hit[2], hit[3]
    if len(_SPACES) > 512:
        _SPACES.clear()
    space, defaults = knob_space(stage, target, constants), default_knobs(stage, target, constants)
    _SPACES[key] = (stage, target, space, defaults)
    return space, defaults


def _checked(stage: Stage, target: TargetInfo, constants: frozenset[Any], knobs: Knobs) -> Knobs:
    space, defaults = _space_and_defaults(stage, target, constants)
    full = dict(defaults)
    for k, v in knobs.items():
        if k not in space:
            raise ValueError(f"stage {stage.name}: unknown knob {k!r} (knobs: {sorted(space)})")
        if v not in space[k]:
            raise ValueError(f"stage {stage.name}: knob {k!r} = {v!r} is not a candidate ({space[k]})")
        full[k] = v
    return full


# ---- helpers ---------------------------------------------------------------------------------------


def _lanes(stage: Stage, target: TargetInfo) -> int:
    return target.lanes(stage.tensor.dtype) if stage.tensor.dtype in VECTOR_DTYPES else 1


def _cache_sizes(target: TargetInfo) -> tuple[int, int]:
    caches = getattr(target, "caches", None)
    if caches is None:
        return DEFAULT_L1, DEFAULT_L2
    return int(caches.l1d), int(caches.l2)


class _Nest:
    """A nest being scheduled: applies steps and records them."""

    def __init__(self, stage: Stage) -> None:
        self.nest = stage_nest(stage)
        self.steps: list[Step] = []

    def do(self, name: str, *args: Any) -> None:
        step = Step(name, args)
        self.nest.apply(step)
        self.steps.append(step)

    def parallel_outer(self, names: list[str]) -> str | None:
        """Fuse the given adjacent outer loops into one and mark it parallel; returns its name."""
        if not names:
            return None
        cur = names[0]
        for n in names[1:]:
            self.do("fuse", cur, n)
            cur = f"{cur}_{n}"
        self.do("parallel", cur)
        return cur

    def parallel_prefix(self, outer: list[str], depth: int) -> str | None:
        """Fuse ``outer[:depth]`` into a parallel loop; returns the last outer loop's name."""
        depth = max(0, min(depth, len(outer)))
        fused = self.parallel_outer(outer[:depth])
        rest = outer[depth:]
        return rest[-1] if rest else fused


# ---- elementwise -----------------------------------------------------------------------------------


def _elementwise_space(stage: Stage, target: TargetInfo) -> dict[str, list[Any]]:
    nest = stage_nest(stage)
    lanes = _lanes(stage, target)
    vec = [0]
    if nest.loops and lanes > 1:
        vec += [f * lanes for f in (1, 2, 4)]
    return {"fuse_inner": list(range(max(len(nest.loops), 1))), "vector": vec,
            "parallel_depth": list(range(len(nest.loops) + 1))}


def _elementwise_fuse(stage: Stage, lanes: int) -> int:
    """Trailing axes to fuse so that the innermost loop is a multiple of the vector lanes, as long
    as every load stays affine in the fused loop (else each lane would recompute its indices with
    divisions: a gather that costs more than the scalar loop the C compiler vectorizes itself)."""
    ext = [lp.extent for lp in stage_nest(stage).loops]
    if lanes <= 1 or not ext or ext[-1] % lanes == 0:
        return 0
    n = ext[-1]
    for f in range(1, len(ext)):
        n *= ext[-1 - f]
        if not _fused_loads_affine(stage, f):
            return 0
        if n % lanes == 0:
            return f
    return 0


def _fused_loads_affine(stage: Stage, fuse: int) -> bool:
    """Whether every load's address is affine in the innermost loop after fusing ``fuse`` outer
    axes into it."""
    n = _Nest(stage)
    inner = _fuse_trailing(n, fuse)[-1]
    env = n.nest.axis_expr
    return all(stride_along(substitute(_address(ld), env), inner) is not None for ld in loads_in(stage.body))


def _fuse_trailing(n: _Nest, count: int) -> list[str]:
    """Fuse the ``count`` loops before the innermost one into it; returns the loop names after."""
    axes = [lp.name for lp in n.nest.loops]
    for _ in range(min(count, len(axes) - 1)):
        n.do("fuse", axes[-2], axes[-1])
        axes = [*axes[:-2], f"{axes[-2]}_{axes[-1]}"]
    return axes


def _elementwise(stage: Stage, knobs: Knobs) -> list[Step]:
    n = _Nest(stage)
    if not n.nest.loops:
        return n.steps
    axes = _fuse_trailing(n, int(knobs["fuse_inner"]))
    last = axes[-1]
    outer = axes[:-1]
    vec = int(knobs["vector"])
    ext = n.nest.loop(last).extent
    if vec and ext % vec == 0:
        n.do("split", last, vec)
        n.do("vectorize", f"{last}_i")
        outer = [*outer, f"{last}_o"]
    elif not outer:
        outer = [last]
    n.parallel_prefix(outer, int(knobs["parallel_depth"]))
    return n.steps


# ---- other reductions ------------------------------------------------------------------------------

PARALLEL_CHUNKS_PER_CORE = 8  # parallel iterations per core that balance the load well enough


def _enough_parallel(shape: tuple[int, ...], target: TargetInfo) -> int:
    """Outer loops to fuse into the parallel loop: just enough iterations for every core; the
    inner loops stay separate (no div/mod to recover their indices)."""
    want = PARALLEL_CHUNKS_PER_CORE * max(1, target.effective_cores())
    n = 1
    for d, e in enumerate(shape):
        n *= e
        if n >= want:
            return d + 1
    return len(shape)



LANE_REDUCTION_DTYPES = ("f32", "f64")
LANE_REDUCTION_COMBINERS = ("sum", "max", "min")


def _lane_reduction_ok(stage: Stage, lanes: int) -> bool:
    """Whether the innermost reduction loop can fold lane-parallel partial accumulators (see
    :mod:`tessera.codegen.c`): a float sum/max/min at least one vector long whose loads that
    depend on the axis are contiguous along it."""
    red = stage.reduce
    assert red is not None
    if (lanes <= 1 or red.combiner not in LANE_REDUCTION_COMBINERS or red.dtype not in LANE_REDUCTION_DTYPES
            or not red.axes or red.extents[-1] < lanes):
        return False
    var = red.axes[-1].name
    return all(stride_along(_address(ld), var) in (0, 1) for ld in loads_in(red.body))


def _reduction_space(stage: Stage, target: TargetInfo) -> dict[str, list[Any]]:
    lanes = _reduction_lanes(stage, target)
    return {"parallel_depth": list(range(len(stage.tensor.shape) + 1)),
            "vector": [0, lanes] if _lane_reduction_ok(stage, lanes) else [0]}


def _reduction_lanes(stage: Stage, target: TargetInfo) -> int:
    red = stage.reduce
    assert red is not None
    return target.lanes(red.dtype) if red.dtype in LANE_REDUCTION_DTYPES else 1


def _simple_reduction(stage: Stage, knobs: Knobs) -> list[Step]:
    n = _Nest(stage)
    spatial = [lp.name for lp in n.nest.loops if not lp.reduce]
    at = n.parallel_prefix(spatial, int(knobs["parallel_depth"]))
    n.steps.append(Step("cache_write", (at or "",)))
    red = stage.reduce
    if int(knobs["vector"]) and red is not None and red.axes:
        n.do("vectorize", red.axes[-1].name)
    return n.steps


# ---- register-tiled contractions ---------------------------------------------------------------------


def _tileable(stage: Stage) -> bool:
    red = stage.reduce
    assert red is not None
    if red.combiner != "sum" or stage.tensor.dtype not in VECTOR_DTYPES or red.dtype not in VECTOR_DTYPES:
        return False
    if _reduction_length(stage) < MIN_TILED_REDUCTION or math.prod(stage.tensor.shape) < 64:
        return False
    # a contraction: the innermost output axis is used by some factor and not by another (the
    # broadcast operand), as in matmul and convolution; not a row statistic like a variance
    inner = [a.name for a, e in zip(stage.tensor.axes, stage.tensor.shape, strict=True) if e > 1]
    if not inner:
        return False
    factors = product_factors(red.body)
    vec = [f for f in factors if inner[-1] in free_vars(f)]
    bcast = [f for f in factors if inner[-1] not in free_vars(f)]
    if not vec or not bcast:
        return False
    # and a register tile reuses operands: some other output axis indexes the broadcast operand but
    # not the vector one (matmul rows, convolution output channels); a depthwise convolution has none
    # and runs better as a plain reduction over partitioned (check-free) windows
    return any(any(a in free_vars(f) for f in bcast) and not any(a in free_vars(f) for f in vec)
               for a in inner[:-1])


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


def _tile_ok(mr: int, nv: int, m_extent: int, regs: int, m_pad_ok: bool = False) -> bool:
    return mr * nv + nv + 1 <= regs and (m_extent % mr == 0 or (m_pad_ok and mr <= m_extent))


def _choose_tile(m_extent: int, v_extent: int, lanes: int, regs: int, padded_ok: bool,
                 m_pad_ok: bool = False) -> TileChoice:
    best: tuple[float, int, int] | None = None
    for nv in NV_CHOICES:
        nr = nv * lanes
        if v_extent % nr and not padded_ok:
            continue
        v_eff = v_extent / (-(-v_extent // nr) * nr)
        for mr in MR_CHOICES:
            if not _tile_ok(mr, nv, m_extent, regs, padded_ok and m_pad_ok):
                continue
            m_eff = m_extent / (-(-m_extent // mr) * mr)
            score = mr * nv * v_eff * m_eff * (1.0 if nr <= v_extent else 0.5)
            if best is None or score > best[0]:
                best = (score, mr, nv)
    if best is None:
        return TileChoice(1, 1)
    return TileChoice(best[1], best[2])


@dataclass
class _TiledPlan:
    """Structure of a tiled stage after fusing ``fuse_v`` axes into the vector axis."""

    n: _Nest
    spatial: list[str]
    reduce: list[str]
    v: str
    v_extent: int
    m: str | None
    m_extent: int
    v_dependent: list[int]
    non_contig: list[int]
    factors: list[Expr]
    m_operands: list[int]  # factors that use m and not v (the broadcast operands)

    @property
    def m_pad_ok(self) -> bool:
        """Rows may be padded (m not a multiple of mr): the broadcast operands are then packed
        zero-padded along m; no factor that uses v may use m (its panels are not padded in m)."""
        return self.m is not None and not any(self.m in free_vars(self.subs[k]) for k in self.v_dependent)

    @property
    def subs(self) -> list[Expr]:
        env = self.n.nest.axis_expr
        return [substitute(f, env) for f in self.factors]


def _max_fuse(stage: Stage, lanes: int) -> tuple[int, int]:
    """(legal fusions into v, fusions the default rule makes)."""
    n = _Nest(stage)
    factors = product_factors(stage.reduce.body)  # type: ignore[union-attr]
    spatial = [lp.name for lp in n.nest.loops if not lp.reduce]
    v = spatial[-1]
    legal = default = 0
    while len(spatial) >= 2:
        prev = spatial[-2]
        if any((prev in free_vars(f)) != (v in free_vars(f)) for f in factors):
            break
        if n.nest.loop(v).extent < 8 * lanes and default == legal:
            default += 1
        n.do("fuse", prev, v)
        v = f"{prev}_{v}"
        spatial = [*spatial[:-2], v]
        legal += 1
    return legal, default


def _tiled_plan(stage: Stage, fuse_v: int, swap: bool = False) -> _TiledPlan:
    red = stage.reduce
    assert red is not None
    n = _Nest(stage)
    nest = n.nest
    spatial = [lp.name for lp in nest.loops if not lp.reduce]
    reduce = [lp.name for lp in nest.loops if lp.reduce]
    factors = product_factors(red.body)
    v = spatial[-1]
    for _ in range(fuse_v):
        prev = spatial[-2]
        n.do("fuse", prev, v)
        v = f"{prev}_{v}"
        spatial = [*spatial[:-2], v]
    env = dict(nest.axis_expr)
    subs = [substitute(f, env) for f in factors]
    v_dependent = [k for k, f in enumerate(subs) if v in free_vars(f)]
    non_contig = [k for k in v_dependent if not _contiguous(factors[k], v, env)]
    # m axis: the innermost other spatial axis used by a factor that does not use v
    m = None
    for cand in reversed(spatial[:-1]):
        if nest.loop(cand).extent > 1 and any(cand in free_vars(f) and v not in free_vars(f) for f in subs):
            m = cand
            break
    if swap and _swappable(subs, v, m):
        assert m is not None
        v, m = m, v
        v_dependent = [k for k, f in enumerate(subs) if v in free_vars(f)]
        non_contig = [k for k in v_dependent if not _contiguous(factors[k], v, env)]
    m_operands = [k for k, f in enumerate(subs) if m is not None and m in free_vars(f) and v not in free_vars(f)]
    return _TiledPlan(n, spatial, reduce, v, nest.loop(v).extent, m, nest.loop(m).extent if m else 1,
                      v_dependent, non_contig, factors, m_operands)


def _swappable(subs: list[Expr], v: str, m: str | None) -> bool:
    """m can be the vector axis and v the row axis: some factor uses v but not m."""
    return m is not None and any(v in free_vars(f) and m not in free_vars(f) for f in subs)


def _default_tile(plan: _TiledPlan, lanes: int, regs: int) -> TileChoice:
    tile = _choose_tile(plan.m_extent, plan.v_extent, lanes, regs, padded_ok=True, m_pad_ok=plan.m_pad_ok)
    exact = _choose_tile(plan.m_extent, plan.v_extent, lanes, regs, padded_ok=False)
    if exact.mr * exact.nv >= EXACT_TILE_SHARE * tile.mr * tile.nv and plan.v_extent % (exact.nv * lanes) == 0:
        tile = exact  # no padding: contiguous operands are used in place, the epilogue needs no guards
    return tile


def _reduction_length(stage: Stage) -> int:
    return math.prod(stage.reduce.extents)  # type: ignore[union-attr]


def _tile_efficiency(plan: _TiledPlan, tile: TileChoice, lanes: int) -> float:
    """Share of the tile's lanes and rows that hold real outputs."""
    nr = tile.nv * lanes
    return (plan.v_extent / (-(-plan.v_extent // nr) * nr)) * (plan.m_extent / (-(-plan.m_extent // tile.mr) * tile.mr))


def _kc_candidates(stage: Stage, target: TargetInfo) -> list[int]:
    """Blocks of the outermost reduction axis whose packed-panel block fits L1 or L2 (nr from
    one to four vectors)."""
    red = stage.reduce
    assert red is not None
    if len(red.extents) == 0 or red.extents[0] < 2:
        return [0]
    k0 = red.extents[0]
    inner = 1
    for e in red.extents[1:]:
        inner *= e
    lanes = _lanes(stage, target)
    l1, l2 = _cache_sizes(target)
    divisors = [d for d in range(1, k0) if k0 % d == 0]
    out = {0}
    for budget in (l1 // 2, l2 // 2):
        for nv in (1, 2, 4):
            fit = [d for d in divisors if d * inner * nv * lanes * 4 <= budget]
            if fit:
                out.add(fit[-1])
    return sorted(out)


def _tiled_space(stage: Stage, target: TargetInfo) -> dict[str, list[Any]]:
    lanes = _lanes(stage, target)
    legal, _ = _max_fuse(stage, lanes)
    plan = _tiled_plan(stage, 0)
    plans = [plan, _tiled_plan(stage, 0, swap=True)] if _swappable(plan.subs, plan.v, plan.m) else [plan]
    tiles = [[mr, nv] for mr in sorted(MR_CHOICES) for nv in sorted(NV_CHOICES)
             if any((p.m is not None or mr == 1) and _tile_ok(mr, nv, p.m_extent, target.vector_registers, p.m_pad_ok)
                    for p in plans)]
    space: dict[str, list[Any]] = {"fuse_v": list(range(legal + 1)), "swap": [False, True][:len(plans)],
                                   "tile": tiles or [[1, 1]]}
    for k in sorted({k for p in plans for k in p.v_dependent}):
        space[f"pack{k}"] = [False, True]
    space["order"] = ["panel_outer", "rows_outer"]
    if len(plan.reduce) > 1:
        space["reduce_order"] = ["as_is", "first_inner"]
    space["kc"] = _kc_candidates(stage, target)
    space["parallel_depth"] = list(range(len(plan.spatial) + 1))
    return space


def _tiled_defaults(stage: Stage, target: TargetInfo, constants: frozenset[Any]) -> Knobs:
    lanes = _lanes(stage, target)
    _, fuse_v = _max_fuse(stage, lanes)
    regs = target.vector_registers
    plan = _tiled_plan(stage, fuse_v)
    tile = _default_tile(plan, lanes, regs)
    swap = False
    if _swappable(plan.subs, plan.v, plan.m):
        # the row axis as the vector axis when that wastes clearly fewer lanes (e.g. a convolution
        # over a small image: vectors along the output channels, rows along the pixels)
        # or when that turns a per-call panel copy of a gathered activation (e.g. the im2col of a
        # padded 3x3 convolution) into compile-time packing of constants, over a reduction long
        # enough to pay for the strided stores of the swapped epilogue
        other = _tiled_plan(stage, fuse_v, swap=True)
        other_tile = _default_tile(other, lanes, regs)
        gain = _tile_efficiency(other, other_tile, lanes) - _tile_efficiency(plan, tile, lanes)
        gathered = [k for k in plan.non_contig if not _is_constant(plan.factors[k], constants)]
        constant_panels = all(_is_constant(other.factors[k], constants) for k in other.v_dependent)
        if gain > SWAP_MIN_GAIN or (gain >= 0 and gathered and constant_panels
                                    and _reduction_length(stage) >= SWAP_MIN_REDUCTION):
            plan, tile, swap = other, other_tile, True
    nr = tile.nv * lanes
    padded = -(-plan.v_extent // nr) * nr
    rows = 1
    for a in plan.spatial:
        if a != plan.v:
            rows *= plan.n.nest.loop(a).extent
    knobs: Knobs = {"kind": "tiled", "fuse_v": fuse_v, "swap": swap, "tile": [tile.mr, tile.nv]}
    for k in _tiled_space(stage, target):
        if k.startswith("pack"):
            knobs[k] = False
    for k in plan.v_dependent:
        # panels: a constant operand is re-laid out for free at compile time; an activation is
        # worth copying when its panels are re-read by enough rows of the tile
        knobs[f"pack{k}"] = (k in plan.non_contig or padded != plan.v_extent
                             or _is_constant(plan.factors[k], constants) or rows >= PACK_MIN_REUSE * tile.mr)
    knobs["order"] = "panel_outer"
    if len(plan.reduce) > 1:
        knobs["reduce_order"] = "as_is"
    knobs["kc"] = 0
    knobs["parallel_depth"] = len(stage.tensor.shape)
    return knobs


def _tiled_reduction(stage: Stage, target: TargetInfo, constants: frozenset[Any], knobs: Knobs) -> list[Step]:
    lanes = _lanes(stage, target)
    plan = _tiled_plan(stage, int(knobs["fuse_v"]), bool(knobs["swap"]))
    n, v, m, spatial = plan.n, plan.v, plan.m, list(plan.spatial)
    mr, nv = (int(x) for x in knobs["tile"])
    if m is None:
        mr = 1
    while plan.m_extent % mr and not plan.m_pad_ok:
        mr -= 1  # a tile of the other orientation: largest row count that divides m
    nr = nv * lanes
    padded = -(-plan.v_extent // nr) * nr
    to_pack = set(plan.non_contig)
    for k in plan.v_dependent:
        if padded != plan.v_extent or knobs.get(f"pack{k}"):
            to_pack.add(k)
    for k in sorted(to_pack):
        n.do("pack", k, v, padded, nr)
    if m and plan.m_extent % mr:
        m_padded = -(-plan.m_extent // mr) * mr
        for k in plan.m_operands:
            n.do("pack", k, m, m_padded, mr)
    n.do("split", v, nr)
    n.do("split", f"{v}_i", lanes)
    v_o, v_io, v_ii = f"{v}_o", f"{v}_i_o", f"{v}_i_i"
    inner_m: list[str] = []
    m_blocks: list[str] = []
    if m and mr > 1:
        n.do("split", m, mr)
        inner_m = [f"{m}_i"]
        spatial = [f"{m}_o" if a == m else a for a in spatial]
        m_blocks = [f"{m}_o"]
    others = [a for a in spatial if a != v]
    if knobs["order"] == "panel_outer":
        # one packed panel of the v-operand is reused by every m block
        outer = [a for a in others if a not in m_blocks] + [v_o] + m_blocks
    else:
        outer = others + [v_o]
    reduce = list(plan.reduce)
    kc = int(knobs["kc"])
    k_block: list[str] = []
    if kc and reduce:
        r0 = reduce[0]
        n.do("split", r0, kc)
        reduce = [f"{r0}_i", *reduce[1:]]
        k_block = [f"{r0}_o"]
    if knobs.get("reduce_order") == "first_inner":
        # e.g. a convolution's input channels innermost: the window's bounds checks (padding)
        # then depend only on outer loops, and the compiler hoists them
        reduce = [*reduce[1:], reduce[0]]
    depth = int(knobs["parallel_depth"])
    if k_block:
        depth = min(depth, len(outer) - 1)
        outer = [*outer[:-1], *k_block, outer[-1]]
    n.do("reorder", *outer, *reduce, *inner_m, v_io, v_ii)
    for a in inner_m:
        n.do("unroll", a)
    n.do("unroll", v_io)
    n.do("vectorize", v_ii)
    at = n.parallel_prefix(outer, depth)
    n.steps.append(Step("cache_write", (at or "",)))
    return n.steps


def _is_constant(factor: Expr, constants: frozenset[Any]) -> bool:
    loads = loads_in(factor)
    return bool(loads) and all(ld.tensor in constants for ld in loads)
