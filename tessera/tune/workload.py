"""Structural workload keys: what a kernel computes, independent of node, tensor and axis names.

Two kernels with the same key have the same stages (expressions, shapes, dtypes, reductions),
the same input signature and the same choice of which inputs are compile-time constants, so
one schedule (and one tuning record) serves both. Axis names are canonicalized (``x0, x1, ...``
in order of first appearance) so a step trace recorded on one instance replays on another after
:func:`rename_steps`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tessera.loop.expr import BinOp, Call, Cast, Const, Expr, Load, Reduce, Select, Var
from tessera.loop.instantiate import GroupCompute
from tessera.schedule.primitives import Step

CANONICAL_PREFIX = "x"
KEY_VERSION = 1  # bump when the serialization changes: old records stop matching


class _Canon:
    """Assigns canonical names to tensors and variables while serializing."""

    def __init__(self, gc: GroupCompute) -> None:
        self.tensors: dict[int, str] = {id(t): f"in{k}" for k, t in enumerate(gc.inputs)}
        for k, st in enumerate(gc.stages):
            self.tensors.setdefault(id(st.tensor), f"s{k}")
        for k, t in enumerate(gc.outputs):
            self.tensors.setdefault(id(t), f"out{k}")
        self.vars: dict[str, str] = {}

    def var(self, name: str) -> str:
        if name not in self.vars:
            self.vars[name] = f"{CANONICAL_PREFIX}{len(self.vars)}"
        return self.vars[name]

    def tensor(self, t: Any) -> str:
        key = id(t)
        if key not in self.tensors:
            self.tensors[key] = f"t{len(self.tensors)}"
        return self.tensors[key]

    def expr(self, e: Expr) -> Any:
        if isinstance(e, Const):
            v = e.value
            return ["c", e.dtype, repr(float(v)) if isinstance(v, float) else v]
        if isinstance(e, Var):
            return ["v", self.var(e.name)]
        if isinstance(e, BinOp):
            return ["b", e.op, e.dtype, self.expr(e.a), self.expr(e.b)]
        if isinstance(e, Call):
            return ["f", e.fn, e.dtype, [self.expr(a) for a in e.args]]
        if isinstance(e, Select):
            return ["s", e.dtype, self.expr(e.cond), self.expr(e.a), self.expr(e.b)]
        if isinstance(e, Cast):
            return ["cast", e.dtype, self.expr(e.value)]
        if isinstance(e, Load):
            return ["ld", self.tensor(e.tensor), e.dtype, [self.expr(i) for i in e.indices]]
        if isinstance(e, Reduce):
            return ["r", e.combiner, e.dtype, [self.var(a.name) for a in e.axes], list(e.extents),
                    self.expr(e.body)]
        raise TypeError(f"cannot serialize expression {type(e).__name__}")


def describe(gc: GroupCompute) -> tuple[dict[str, Any], dict[str, str]]:
    """The canonical structure of a kernel and the map actual axis name -> canonical name."""
    c = _Canon(gc)
    consts = {id(t) for t in gc.constants}
    inputs = [[list(t.shape), t.dtype, id(t) in consts] for t in gc.inputs]
    stages = []
    for st in gc.stages:
        # axes first (spatial, then reduction) so canonical names follow loop order
        axes = [c.var(a.name) for a in st.tensor.axes]
        red = None
        if st.reduce is not None:
            red = [c.var(a.name) for a in st.reduce.axes]
            red = [st.reduce.combiner, st.reduce.dtype, red, list(st.reduce.extents), c.expr(st.reduce.body)]
        acc = c.tensor(st.acc_ref) if st.acc_ref is not None else None
        stages.append({"tensor": c.tensor(st.tensor), "shape": list(st.tensor.shape), "dtype": st.tensor.dtype,
                       "axes": axes, "body": c.expr(st.body), "reduce": red, "acc": acc, "output": st.is_output})
    outputs = [c.tensor(t) for t in gc.outputs]
    return {"v": KEY_VERSION, "inputs": inputs, "stages": stages, "outputs": outputs}, dict(c.vars)


def workload_key(gc: GroupCompute) -> str:
    """sha256 (hex) of the kernel's canonical structure."""
    structure, _ = describe(gc)
    blob = json.dumps(structure, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _rename(name: str, mapping: Mapping[str, str]) -> str:
    # loop names are axis names joined by "_" with "_o"/"_i" split suffixes; axis names have no "_"
    return "_".join(mapping.get(tok, tok) for tok in name.split("_"))


def rename_steps(steps: list[Step], mapping: Mapping[str, str]) -> list[Step]:
    """``steps`` with every loop name's axis tokens renamed through ``mapping``."""
    return [Step(s.name, tuple(_rename(a, mapping) if isinstance(a, str) else a for a in s.args)) for s in steps]


def canonical_schedules(gc: GroupCompute, schedules: Mapping[str, list[Step]]) -> list[list[Step]]:
    """Per stage (in order), its steps with canonical loop names."""
    _, names = describe(gc)
    return [rename_steps(list(schedules.get(st.name, [])), names) for st in gc.stages]


def instance_schedules(gc: GroupCompute, canonical: list[list[Step]]) -> dict[str, list[Step]]:
    """Canonical per-stage steps mapped back to this instance's loop names (by stage name)."""
    _, names = describe(gc)
    back = {v: k for k, v in names.items()}
    if len(canonical) != len(gc.stages):
        raise ValueError(f"record has {len(canonical)} stage schedule(s), kernel has {len(gc.stages)} stage(s)")
    return {st.name: rename_steps(steps, back) for st, steps in zip(gc.stages, canonical, strict=True)}
