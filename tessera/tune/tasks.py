"""A model's kernels as tuning tasks, one per distinct workload (weight = occurrences)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.errors import CompileError
from tessera.graph.ir import Graph
from tessera.graph.passes import winograd
from tessera.loop.fusion import FusionGroup, partition
from tessera.loop.instantiate import GroupCompute, instantiate_group
from tessera.loop.stages import kernel_flops
from tessera.tune.workload import workload_key


@dataclass(eq=False)
class TuneTask:
    """One distinct kernel workload: a representative instance and how often the model runs it."""

    key: str
    name: str  # readable: ops and output shape
    gc: GroupCompute
    weight: int = 1
    flops: int = 0
    nodes: list[str] = field(default_factory=list)  # node names of every instance (for reports)


def kernel_label(group: FusionGroup, shape: Iterable[Any]) -> str:
    """Readable name of a kernel: its fused operators and its (first) output shape."""
    ops = "+".join(dict.fromkeys(n.op for n in group.nodes))
    return re.sub(r"\s+", "", f"{ops}[{'x'.join(str(d) for d in shape)}]")


def tasks_from_groups(groups: Iterable[tuple[FusionGroup, GroupCompute]]) -> list[TuneTask]:
    """De-duplicate instantiated groups by workload key, in first-occurrence order."""
    tasks: dict[str, TuneTask] = {}
    for group, gc in groups:
        key = workload_key(gc)
        task = tasks.get(key)
        if task is None:
            label = kernel_label(group, gc.outputs[0].shape if gc.outputs else ())
            task = tasks[key] = TuneTask(key, label, gc, 0, kernel_flops(gc.stages))
        task.weight += 1
        task.nodes.extend(n.name for n in group.nodes)
    return list(tasks.values())


def extract_tasks(g: Graph, input_shapes: Mapping[str, Any] | None = None, optimize: bool = True) -> list[TuneTask]:
    """The tuning tasks of graph ``g`` as :func:`tessera.compiler.compile_graph` would lower it
    (same specialization, graph passes and fusion), de-duplicated by workload."""
    from tessera.graph.passes import optimize as run_passes
    from tessera.graph.specialize import specialize

    if input_shapes:
        g = specialize(g, input_shapes)
    symbols = sorted({s for n in g.inputs for s in g.types[n].symbols})
    if symbols:
        raise CompileError(f"model {g.name!r} has symbolic input dims ({', '.join(symbols)}); pass input_shapes")
    if optimize:
        g = run_passes(g)
    g = winograd.for_cpu(g)
    pairs = [(grp, instantiate_group(g, grp)) for grp in partition(g) if grp.kind != "view"]
    return tasks_from_groups(pairs)


def merge_tasks(*task_lists: list[TuneTask]) -> list[TuneTask]:
    """Tasks of several models as one list: identical workloads are tuned once (weights add up)."""
    out: dict[str, TuneTask] = {}
    for tl in task_lists:
        for t in tl:
            if t.key in out:
                out[t.key].weight += t.weight
                out[t.key].nodes.extend(t.nodes)
            else:
                out[t.key] = TuneTask(t.key, t.name, t.gc, t.weight, t.flops, list(t.nodes))
    return list(out.values())
