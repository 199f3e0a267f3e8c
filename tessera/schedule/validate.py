"""Legality of a step list for one stage, checked before it is replayed and built.

:func:`validate_steps` replays a schedule on the stage's fresh nest and checks every step as it
goes (primitive name, argument count and types, loop names, split factors, packs) and the final
nest (one parallel loop outside every reduction, one innermost vectorized loop, bounded unrolling
and accumulator tiles, every packed panel read only inside its zero-padded extent). Schedules that
come from the generic rules pass; a schedule from elsewhere (a tuning record) that fails raises
:class:`ScheduleError` naming the stage, the step and what is wrong."""

from __future__ import annotations

from typing import Any

from tessera.loop.expr import bounds, free_vars, substitute
from tessera.loop.stages import Stage
from tessera.schedule.build import product_factors, stage_nest
from tessera.schedule.primitives import PRIMITIVES, LoopNest, Step

MAX_VECTOR = 64  # lanes of one vectorized loop (the rules use at most four vectors of 16)
MAX_UNROLL = 64
MAX_ACC_ELEMENTS = 1 << 14  # a register/local accumulator tile (the rules use at most 8 x 64)
FLOAT_FOLD_DTYPES = ("f32", "f64")
FOLD_COMBINERS = ("sum", "max", "min")

# argument types per primitive: "s" a loop name, "i" an int, "s*" one or more loop names
_ARGS: dict[str, tuple[str, ...]] = {"split": ("s", "i"), "fuse": ("s", "s"), "reorder": ("s*",),
                                     "parallel": ("s",), "vectorize": ("s",), "unroll": ("s",),
                                     "cache_write": ("s",), "pack": ("i", "s", "i", "i")}


class ScheduleError(ValueError):
    """A schedule is not legal for its stage."""


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_args(step: Step) -> None:
    if step.name not in PRIMITIVES or step.name not in _ARGS:
        raise ScheduleError(f"primitive {step.name!r} is not a CPU schedule primitive")
    spec, args = _ARGS[step.name], step.args
    if spec == ("s*",):
        if not args or not all(isinstance(a, str) for a in args):
            raise ScheduleError("reorder takes one or more loop names")
        if len(set(args)) != len(args):
            raise ScheduleError("reorder names a loop twice")
        return
    n_opt = 1 if step.name == "pack" else 0  # pack's tile is optional
    if not len(spec) - n_opt <= len(args) <= len(spec):
        raise ScheduleError(f"{step.name} takes {len(spec)} argument(s), got {len(args)}")
    for a, kind in zip(args, spec, strict=False):
        if kind == "s" and not isinstance(a, str):
            raise ScheduleError(f"{step.name}: {a!r} is not a loop name")
        if kind == "i" and not _is_int(a):
            raise ScheduleError(f"{step.name}: {a!r} is not an integer")


def validate_steps(stage: Stage, steps: list[Any]) -> LoopNest:
    """Replay ``steps`` on ``stage``'s fresh nest, checking each (see the module docstring);
    returns the final nest. Raises :class:`ScheduleError`."""
    nest = stage_nest(stage)
    red = stage.reduce
    factors = (product_factors(red.body) if red.combiner == "sum" else [red.body]) if red is not None else []
    packed: set[int] = set()
    cached = False
    for k, step in enumerate(steps):
        try:
            if not isinstance(step, Step):
                raise ScheduleError(f"{step!r} is not a schedule step")
            _check_args(step)
            _check_step(nest, step, stage, factors, packed, cached)
            cached = cached or step.name == "cache_write"
            nest.apply(step)
        except ScheduleError as e:
            raise ScheduleError(f"stage {stage.name}, step {k} {step}: {e}") from None
        except (KeyError, ValueError, TypeError, IndexError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise ScheduleError(f"stage {stage.name}, step {k} {step}: {msg}") from None
    try:
        _check_final(nest, stage, factors)
    except ScheduleError as e:
        raise ScheduleError(f"stage {stage.name}: {e}") from None
    return nest


def _check_step(nest: LoopNest, step: Step, stage: Stage, factors: list[Any], packed: set[int],
                cached: bool) -> None:
    a = step.args
    if step.name in ("split", "fuse", "parallel", "vectorize", "unroll"):
        nest.find(a[0])
    if step.name == "parallel" and nest.loop(a[0]).reduce:
        raise ScheduleError(f"parallel reduction loop {a[0]}: its iterations would race on one accumulator")
    if step.name == "split":
        ext = nest.loop(a[0]).extent
        top = max(ext, MAX_VECTOR)
        if not 1 <= a[1] <= top:
            raise ScheduleError(f"split factor {a[1]} outside 1..{top} for loop {a[0]} of extent {ext}")
    elif step.name == "fuse":
        nest.find(a[1])
    elif step.name == "reorder":
        for n in a:
            nest.find(n)
    elif step.name == "cache_write":
        if stage.reduce is None:
            raise ScheduleError("cache_write on a stage without a reduction")
        if cached:
            raise ScheduleError("a second cache_write")
        if a[0]:
            nest.find(a[0])
    elif step.name == "pack":
        _check_pack(nest, step, stage, factors, packed)


def _check_pack(nest: LoopNest, step: Step, stage: Stage, factors: list[Any], packed: set[int]) -> None:
    factor, axis, padded = step.args[0], step.args[1], step.args[2]
    tile = step.args[3] if len(step.args) > 3 else 0
    if stage.reduce is None or stage.reduce.combiner != "sum":
        raise ScheduleError("pack needs a sum reduction (its body's product factors are packed)")
    if not 0 <= factor < len(factors):
        raise ScheduleError(f"factor {factor} out of range: the reduction body has {len(factors)} factor(s)")
    if factor in packed:
        raise ScheduleError(f"factor {factor} is packed twice")
    lp = nest.loop(axis)
    if lp.reduce:
        raise ScheduleError(f"pack axis {axis} is a reduction loop")
    if axis not in free_vars(substitute(factors[factor], nest.axis_expr)):
        raise ScheduleError(f"factor {factor} does not depend on the pack axis {axis}")
    tile = tile or padded
    if tile < 1 or padded < 1:
        raise ScheduleError(f"pack tile {tile} and padded extent {padded} must be positive")
    want = -(-lp.extent // tile) * tile
    if padded != want:
        raise ScheduleError(f"padded extent {padded} does not cover loop {axis} of extent {lp.extent} in "
                            f"tiles of {tile} (expected {want})")
    packed.add(factor)


def _check_final(nest: LoopNest, stage: Stage, factors: list[Any]) -> None:
    loops = nest.loops
    names = [lp.name for lp in loops]
    par = [k for k, lp in enumerate(loops) if lp.kind == "parallel"]
    vec = [k for k, lp in enumerate(loops) if lp.kind == "vectorized"]
    first_red = next((k for k, lp in enumerate(loops) if lp.reduce), len(loops))
    if len(par) > 1:
        raise ScheduleError(f"{len(par)} parallel loops ({', '.join(names[k] for k in par)}); at most one")
    if par and par[0] > first_red:
        raise ScheduleError(f"parallel loop {names[par[0]]} is inside reduction loop {names[first_red]}")
    if len(vec) > 1:
        raise ScheduleError(f"{len(vec)} vectorized loops; at most one")
    for k in vec:
        lp = loops[k]
        if k != len(loops) - 1:
            raise ScheduleError(f"vectorized loop {lp.name} is not the innermost loop")
        if not lp.reduce and lp.extent > MAX_VECTOR:  # a fold (reduction loop) keeps one vector of partials
            raise ScheduleError(f"vectorized loop {lp.name} has {lp.extent} lanes (at most {MAX_VECTOR})")
        red = stage.reduce
        if lp.reduce and (red is None or red.combiner not in FOLD_COMBINERS or red.dtype not in FLOAT_FOLD_DTYPES):
            raise ScheduleError(f"vectorized reduction loop {lp.name} is not a float sum/max/min fold")
    for lp in loops:
        if lp.kind == "unrolled" and lp.extent > MAX_UNROLL:
            raise ScheduleError(f"unrolled loop {lp.name} has {lp.extent} iterations (at most {MAX_UNROLL})")
    if stage.reduce is None:
        return
    at = nest.cache_at
    if at:
        if at not in names:
            raise ScheduleError(f"cache_write position {at!r} is not a loop (loops: {names})")
        split = names.index(at) + 1
    else:
        split = first_red if at is None else 0
    if par and par[0] >= split:
        raise ScheduleError(f"parallel loop {names[par[0]]} is inside the accumulator tile")
    tile = 1
    for lp in loops[split:]:
        if not lp.reduce:
            tile *= lp.extent
    if tile > MAX_ACC_ELEMENTS:
        raise ScheduleError(f"accumulator tile of {tile} elements (at most {MAX_ACC_ELEMENTS})")
    ranges = {lp.name: (0, lp.extent - 1) for lp in loops}
    for spec in nest.packs:
        used = free_vars(substitute(factors[spec.factor], spec.axis_expr))
        others = [(n, e) for n, e in spec.extents.items() if n in used and n != spec.axis]
        for var, limit in [(spec.axis, spec.padded), *others]:
            b = bounds(nest.final_expr(var, spec.sub_index), ranges)
            if b is None or b[0] < 0 or b[1] >= limit:
                raise ScheduleError(f"the panel packed along {spec.axis} is read at {var} in "
                                    f"{b and list(b)}, outside 0..{limit - 1}")
