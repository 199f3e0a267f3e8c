"""Features of a scheduled kernel for the cost model, read from the scheduled loop nests.

Per stage: sizes and work, vector/unroll/parallel extents (and the parallel load balance on the
target's cores), the accumulator tile against the vector registers, packing, and for each cache
level of the target description the data traffic of the loop nest (the outermost loop whose
inner footprint fits the level, times how often it runs) and the arithmetic intensity against
it. The kernel's vector is the heaviest stage's features plus a few kernel totals."""

from __future__ import annotations

import math
from typing import Any

from tessera.loop.expr import free_vars, loads_in, substitute
from tessera.loop.instantiate import GroupCompute
from tessera.loop.stages import Stage, kernel_flops, stage_flops
from tessera.schedule.primitives import LoopNest, Step
from tessera.schedule.rules import check_replay

_ITEMSIZE = {"f64": 8, "i64": 8, "u64": 8, "f32": 4, "i32": 4, "u32": 4, "f16": 2, "bf16": 2, "i16": 2,
             "u16": 2, "i8": 1, "u8": 1, "bool": 1}

STAGE_FEATURES = (
    "log_out", "log_red", "log_flops", "vector", "log_unroll", "log_parallel", "balance", "has_parallel",
    "n_loops", "cache_depth", "log_tile", "tile_regs", "n_packs", "pad_ratio", "log_inner", "inner_reduce",
    "log_total_bytes", "log_traffic_l1", "intensity_l1", "log_traffic_l2", "intensity_l2", "log_traffic_l3",
    "intensity_l3", "n_loads", "n_calls", "mr", "nv", "kc", "parallel_depth", "fuse_v", "rows_outer",
)
FEATURE_NAMES = (*STAGE_FEATURES, "n_stages", "log_kernel_flops")


def _log(x: float) -> float:
    return math.log2(x) if x > 0 else -1.0


def _calls(e: Any) -> int:
    from tessera.loop.expr import Call, children

    return (1 if isinstance(e, Call) else 0) + sum(_calls(c) for c in children(e))


def stage_features(st: Stage, nest: LoopNest, knobs: dict[str, Any], target: Any) -> list[float]:
    lanes = target.lanes("f32")
    cores = target.effective_cores()
    loops = nest.loops
    vec = next((lp.extent for lp in loops if lp.kind == "vectorized"), 0)
    unroll = math.prod(lp.extent for lp in loops if lp.kind == "unrolled")
    par = next((lp.extent for lp in loops if lp.kind == "parallel"), 0)
    balance = (math.ceil(par / cores) * cores / par) if par else float(cores)
    if nest.cache_at is None:
        depth, tile = 0, 1
    else:
        split = 0 if nest.cache_at == "" else nest.find(nest.cache_at) + 1
        depth = split + 1
        tile = math.prod(lp.extent for lp in loops[split:] if not lp.reduce)
    pad = max((p.padded / max(p.extents.get(p.axis, p.padded), 1) for p in nest.packs), default=1.0)
    body = st.reduce.body if st.reduce is not None else st.body
    loads = loads_in(substitute(body, nest.axis_expr))
    flops = stage_flops(st)
    extents = {lp.name: lp.extent for lp in loops}
    names = [lp.name for lp in loops]
    uses = [(free_vars(ld), _ITEMSIZE.get(ld.dtype, 4)) for ld in loads]

    def footprint(d: int) -> float:
        inner = set(names[d:])
        return sum(size * math.prod(extents[v] for v in vs if v in inner) for vs, size in uses)

    caches = getattr(target, "caches", None)
    levels = [caches.l1d, caches.l2, caches.l3 or 4 * caches.l2] if caches else [32 << 10, 1 << 20, 8 << 20]
    traffic = []
    for size in levels:
        d = next((d for d in range(len(names) + 1) if footprint(d) <= size), len(names))
        t = math.prod(extents[n] for n in names[:d]) * footprint(d)
        traffic += [_log(t), flops / t if t else 0.0]
    out_bytes = math.prod(st.tensor.shape) * _ITEMSIZE.get(st.tensor.dtype, 4)
    tile_knob = knobs.get("tile") or [0, 0]
    return [
        _log(math.prod(st.tensor.shape)), _log(math.prod(st.reduce.extents) if st.reduce else 1), _log(flops),
        float(vec), _log(unroll), _log(par), balance, float(par > 0), float(len(loops)), float(depth),
        _log(tile), tile / max(lanes, 1) / max(target.vector_registers, 1), float(len(nest.packs)), pad,
        _log(loops[-1].extent if loops else 1), float(bool(loops and loops[-1].reduce)),
        _log(footprint(0) + out_bytes), *traffic, float(len(loads)), float(_calls(st.body) + _calls(body)),
        float(tile_knob[0]), float(tile_knob[1]), float(knobs.get("kc", 0)), float(knobs.get("parallel_depth", 0)),
        float(knobs.get("fuse_v", 0)), float(knobs.get("order") == "rows_outer"),
    ]


def kernel_features(gc: GroupCompute, schedules: dict[str, list[Step]], config: list[dict[str, Any]],
                    target: Any) -> list[float]:
    """The feature vector (see :data:`FEATURE_NAMES`) of ``gc`` scheduled by ``schedules``."""
    heaviest = max(range(len(gc.stages)), key=lambda k: stage_flops(gc.stages[k]))
    st = gc.stages[heaviest]
    nest = check_replay(st, schedules.get(st.name, []))
    feats = stage_features(st, nest, config[heaviest] if heaviest < len(config) else {}, target)
    return [*feats, float(len(gc.stages)), _log(kernel_flops(gc.stages))]
