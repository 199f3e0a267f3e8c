"""A fusion group's compute definitions instantiated as tensor expressions and built into stages.

Shared by the compiler (which schedules and emits the stages) and the auto-scheduler (which
hashes them into a workload and searches their schedules)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.errors import CompileError
from tessera.graph.ir import Graph
from tessera.graph.registry import get_op, normalize_attrs
from tessera.graph.tensor_type import TensorType
from tessera.loop.compute import ComputeContext, get_compute
from tessera.loop.fusion import FusionGroup
from tessera.loop.stages import Stage, build_stages
from tessera.loop.te import Tensor, compute, placeholder


@dataclass(eq=False)
class GroupCompute:
    """Placeholders (one per group input, in order), output tensors, stages and constant values."""

    inputs: list[Tensor]
    outputs: list[Tensor]
    stages: list[Stage]
    constants: dict[Tensor, Any]  # placeholder -> its compile-time value (np.ndarray)


def instantiate_group(g: Graph, group: FusionGroup) -> GroupCompute:
    """Instantiate ``group``'s compute definitions over placeholders for its inputs and build its stages."""
    tensors: dict[str, Tensor] = {}
    inputs: list[Tensor] = []
    for v in group.inputs:
        t = g.types[v]
        ph = placeholder(tuple(int(d) for d in t.shape), t.dtype.value, "in")
        tensors[v] = ph
        inputs.append(ph)
    for node in group.nodes:
        cdef = get_compute(node.op)
        if cdef is None:
            raise CompileError(f"{node.op} node {node.name!r} has no compute definition")
        in_types: list[TensorType | None] = [g.types[i] if i else None for i in node.inputs]
        consts = [g.constants.get(i) if i else None for i in node.inputs]
        ctx = ComputeContext([tensors.get(i) if i else None for i in node.inputs],
                             normalize_attrs(get_op(node.op), node), in_types,
                             [g.types[o] for o in node.outputs if o], consts, node.name)
        try:
            outs = cdef.fn(ctx)
        except CompileError:
            raise
        except (NotImplementedError, ValueError, KeyError, IndexError, TypeError) as e:
            raise CompileError(f"{node.op} node {node.name!r}: cannot lower: {e}") from e
        for o, t in zip([o for o in node.outputs if o], outs, strict=False):
            tensors[o] = t
    outputs: list[Tensor] = []
    for v in group.outputs:
        t = tensors[v]
        if t.is_placeholder or any(t is o for o in outputs):  # an output that is an input: copy it
            src = t
            t = compute(src.shape, lambda *i, s=src: s[i], "copy")
        outputs.append(t)
    constants = {tensors[v]: g.constants[v] for v in group.inputs if v in g.constants}
    return GroupCompute(inputs, outputs, build_stages(outputs), constants)
