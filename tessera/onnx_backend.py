"""Tessera as an ONNX backend (``onnx.backend.base.Backend``).

``TesseraBackend.prepare(model)`` imports the model with the ONNX frontend and returns a
:class:`TesseraRep` that runs it. Execution modes (``_EXECUTORS``):

- ``mode="reference"`` (default): the registry's NumPy reference implementations;
- ``mode="compiled"``: the CPU compiler (``tessera.compiler.compile``, target "host"). The
  backend interface gives no input shapes, so the graph is compiled on the first ``run`` for
  the shapes of the actual inputs, and once per distinct shape signature after that.
  Operators the compiler cannot compile statically (data-dependent output shapes such as
  NonZero, Dropout in training mode) run on the host between compiled segments
  (:mod:`tessera.segmented`, with a warning naming them); any other compile failure raises
  its ``CompileError``: there is no fallback to the reference executor for the whole model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from tessera.frontend.onnx_importer import import_onnx
from tessera.graph.ir import Graph
from tessera.graph.reference import run_reference
from tessera.graph.signature import bind_inputs

Executor = Callable[[Graph, "Sequence[np.ndarray] | Mapping[str, np.ndarray]"], dict[str, np.ndarray]]


def value_inputs(graph: Graph) -> frozenset[str]:
    """Inputs of ``graph`` (static input shapes, constants folded) whose *values* compiled code
    needs: those an operand that a compute definition takes as a compile-time constant
    (``ComputeDef.const_inputs``: Reshape's shape, Resize's scales, OneHot's depth, Range's
    bounds...) is computed from. Data inputs never are: an operator whose output size depends
    on its data (NonZero...) runs on the host rather than being evaluated at compile time."""
    from tessera.loop.compute import get_compute

    producer = {o: n for n in graph.nodes for o in n.outputs if o}
    need: list[str] = []
    for n in graph.nodes:
        cdef = get_compute(n.op)
        if cdef is not None:
            need += [n.inputs[i] for i in cdef.const_inputs if i < len(n.inputs) and n.inputs[i]]
    seen: set[str] = set()
    found = set()
    while need:
        v = need.pop()
        if v in seen or v in graph.constants:
            continue
        seen.add(v)
        if v in graph.inputs:
            found.add(v)
        elif v in producer:
            need.extend(i for i in producer[v].inputs if i)
    return frozenset(found)


class CompiledExecutor:
    """Runs ``graph`` through the CPU compiler, compiling lazily per input signature.

    Inputs whose values the compiled code needs (:func:`value_inputs` of the graph specialized
    to the input shapes: shapes, axes, scales, sizes... that ONNX passes as tensors) are
    specialized on their values, like static shapes are: they become constants of the compiled
    graph, and the signature includes their values. Every other input stays a run-time input."""

    def __init__(self, graph: Graph, target: str = "host", num_threads: int | None = None) -> None:
        self.graph = graph
        self.target = target
        self.num_threads = num_threads
        self.models: dict[tuple[Any, ...], tuple[Any, list[str]]] = {}  # signature -> (model, its inputs)
        self.value_names: dict[tuple[Any, ...], frozenset[str]] = {}  # shape signature -> value inputs

    def _value_inputs(self, feeds: Mapping[str, np.ndarray]) -> frozenset[str]:
        from tessera.graph.passes import optimize
        from tessera.graph.specialize import specialize

        shapes = tuple((n, a.shape) for n, a in feeds.items())
        names = self.value_names.get(shapes)
        if names is None:
            names = value_inputs(optimize(specialize(self.graph, dict(shapes))))
            self.value_names[shapes] = names
        return names

    def __call__(self, graph: Graph, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tessera.compiler import compile as compile_model
        from tessera.graph.specialize import bind_constant_inputs

        if graph is not self.graph:
            raise ValueError(f"this executor compiles graph {self.graph.name!r}, got {graph.name!r}")
        feeds, _ = bind_inputs(graph, inputs)  # count, dtype and declared-shape checks, as the reference
        wanted = self._value_inputs(feeds)
        values = {n: a for n, a in feeds.items() if n in wanted}
        key = tuple((n, a.shape, a.tobytes() if n in values else None) for n, a in feeds.items())
        entry = self.models.get(key)
        if entry is None:
            g = bind_constant_inputs(graph, values) if values else graph
            shapes = {n: feeds[n].shape for n in g.inputs}
            entry = (compile_model(g, self.target, input_shapes=shapes, num_threads=self.num_threads), list(g.inputs))
            self.models[key] = entry
        model, names = entry
        return dict(zip(graph.outputs, model(*[feeds[n] for n in names]), strict=True))


_EXECUTORS: dict[str, Callable[[Graph], Executor]] = {
    "reference": lambda _g: run_reference,
    "compiled": CompiledExecutor,
}
MODES = tuple(_EXECUTORS)


class TesseraRep(BackendRep):
    """A prepared model: the imported graph plus the executor of the chosen mode."""

    def __init__(self, graph: Graph, mode: str = "reference") -> None:
        if mode not in _EXECUTORS:
            raise ValueError(f"unknown execution mode {mode!r} (available: {', '.join(MODES)})")
        self.graph = graph
        self.mode = mode
        self.executor = _EXECUTORS[mode](graph)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run on ``inputs`` (one array, a sequence in input order, or a dict by name)."""
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        elif not isinstance(inputs, Mapping):
            inputs = list(inputs)
        outs = self.executor(self.graph, inputs)
        names = self.graph.outputs
        return namedtupledict("Outputs", names)(*[outs[n] for n in names])


class TesseraBackend(Backend):
    """ONNX backend interface over Tessera (CPU; reference or compiled execution)."""

    @classmethod
    def is_compatible(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> TesseraRep:
        """Import ``model`` (ModelProto, path or bytes); ``mode`` picks the executor."""
        if not cls.supports_device(device):
            raise ValueError(f"device {device!r} is not supported by Tessera's ONNX backend (CPU only)")
        return TesseraRep(import_onnx(model), mode=kwargs.get("mode", "reference"))

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: NodeProto,
        inputs: Any,
        device: str = "CPU",
        outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """Run a single node on ``inputs`` by wrapping it in a one-node model."""
        arrays = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
        present = [name for name in node.input if name]
        if len(present) != len(arrays):
            raise ValueError(f"node {node.op_type} has {len(present)} inputs, got {len(arrays)} arrays")
        in_infos = [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype),
                                          np.asarray(a).shape)
            for name, a in zip(present, arrays, strict=True)
        ]
        out_infos = [
            helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None) for name in node.output if name
        ]
        opset = int(kwargs.pop("opset_version", onnx.defs.onnx_opset_version()))
        graph = helper.make_graph([node], f"{node.op_type}_node", in_infos, out_infos)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        return cls.run_model(model, [np.asarray(a) for a in arrays], device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            return Device(device).type == DeviceType.CPU
        except (AttributeError, ValueError):
            return False


prepare = TesseraBackend.prepare
run_model = TesseraBackend.run_model
run_node = TesseraBackend.run_node
supports_device = TesseraBackend.supports_device
