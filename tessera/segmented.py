"""Host fallback: compiled segments around the operators the compiler cannot compile statically.

An operator whose output shape depends on its input *values* (NonZero, Unique, Compress...) or
that the compiler has no compute definition for (Dropout in training mode draws a random mask)
runs on the host with its registry reference implementation, the very code of the reference
executor; everything between such operators is compiled. Like a graph break in
``torch.compile``, each host operator splits the graph:

- nodes are placed as early as their inputs allow: level ``k`` holds the compiled nodes that
  need the outputs of host operators of level ``k - 1``, then the host operators of level ``k``;
- a level's nodes whose shapes are all static form a segment compiled at compile time; the
  nodes whose shapes depend on a host operator's output *values* form a segment compiled on
  first use for the concrete shapes seen, and again for each new shape signature (cached; past
  :data:`MAX_SHAPE_SIGNATURES` of them, like ``torch.compile``'s recompile limit, new
  signatures run that segment with the reference executor);
- :func:`tessera.compiler.compile` comes here only when the plain compile raises
  :class:`~tessera.errors.CompileError`: a model without host operators compiles as before.

The compiler warns once per compile naming the host operators (:class:`HostFallbackWarning`).
A :class:`SegmentedModel` runs in-process only: host operators need the graph layer, which an
artifact (NumPy-only runtime) does not carry, so saving raises :class:`HostFallbackSaveError`.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera.errors import CompileError, TesseraError
from tessera.graph.ir import Graph, Node
from tessera.graph.reference import run_node, run_reference
from tessera.graph.specialize import specialize
from tessera.loop.compute import get_compute
from tessera.loop.fusion import build_compute
from tessera.runtime.inputs import bind_inputs, check_input
from tessera.runtime.program import TensorSpec

log = logging.getLogger("tessera.compiler")

DATA_DEPENDENT = "data-dependent output shape"
MAX_SHAPE_SIGNATURES = 8  # compiled variants kept per lazily compiled segment

# Compiles a graph with static input shapes into a callable model (a CompiledModel, or a
# SegmentedModel when the graph has host operators of its own).
CompileFn = Callable[[Graph], Any]


class HostFallbackWarning(UserWarning):
    """Some operators of a compiled model run on the host (reference implementation)."""


class HostFallbackSaveError(TesseraError):
    """A model with host-fallback operators cannot be saved as a NumPy-only artifact."""


@dataclass(frozen=True)
class HostOp:
    """One operator that runs on the host, and why."""

    op: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op} {self.name!r} ({self.reason})"


# ---- planning ----------------------------------------------------------------------------------


def host_reason(g: Graph, node: Node) -> str | None:
    """Why ``node`` of the static-input, optimized graph ``g`` must run on the host; None if it
    can be compiled (now, or once the concrete shapes of its inputs are known)."""
    in_types = [g.types[v] for v in node.inputs if v]
    out_types = [g.types[o] for o in node.outputs if o]
    known = set().union(*(t.symbols for t in in_types)) if in_types else set()
    if any(t.symbols - known for t in out_types):
        return DATA_DEPENDENT
    if get_compute(node.op) is None:
        return "no compute definition"
    if all(t.is_static for t in in_types + out_types):
        try:
            build_compute(g, node)
        except CompileError as e:
            return str(e).removeprefix(f"{node.op} node {node.name!r}: ")
    return None  # shapes known only at run time: checked when its segment is compiled


@dataclass
class _Plan:
    levels: list[tuple[list[Node], list[Node], list[Node]]]  # (static nodes, dynamic nodes, host nodes)
    host: list[HostOp]


def plan_segments(g: Graph) -> _Plan:
    """Split the nodes of ``g`` (static inputs, optimized) into levels of compiled and host nodes."""
    avail: dict[str, int] = {}  # value -> first level whose compiled nodes may read it
    placed: list[tuple[int, Node, bool]] = []
    host: list[HostOp] = []
    for node in g.nodes:
        level = max((avail.get(v, 0) for v in node.inputs if v), default=0)
        reason = host_reason(g, node)
        if reason is not None:
            host.append(HostOp(node.op, node.name, reason))
        for o in node.outputs:
            if o:
                avail[o] = level + (reason is not None)
        placed.append((level, node, reason is not None))
    n_levels = max((lv for lv, _, _ in placed), default=0) + 1
    levels: list[tuple[list[Node], list[Node], list[Node]]] = [([], [], []) for _ in range(n_levels)]
    dynamic_at: dict[str, int] = {}  # value -> level of the dynamic compiled node producing it
    for level, node, on_host in placed:
        static, dynamic, hosted = levels[level]
        if on_host:
            hosted.append(node)
            continue
        values = [v for v in node.inputs + node.outputs if v]
        if any(not g.types[v].is_static or dynamic_at.get(v) == level for v in values):
            dynamic.append(node)
            dynamic_at.update((o, level) for o in node.outputs if o)
        else:
            static.append(node)
    return _Plan(levels, host)


def _subgraph(g: Graph, nodes: list[Node], outputs: list[str], name: str) -> Graph:
    defined = [o for n in nodes for o in n.outputs if o]
    inside = set(defined)
    inputs: dict[str, None] = {}  # ordered set: linear in the segment, not in the whole graph
    constants: dict[str, np.ndarray] = {}
    for n in nodes:
        for v in n.inputs:
            if not v or v in inside:
                continue
            if v in g.constants:
                constants[v] = g.constants[v]
            else:
                inputs.setdefault(v)
    types = {v: g.types[v] for v in (*inputs, *constants, *defined) if v in g.types}
    return Graph(f"{g.name}.{name}", list(inputs), outputs, [n.clone() for n in nodes], constants, types)


# ---- steps -------------------------------------------------------------------------------------


class _CompiledStep:
    """A segment compiled at compile time."""

    def __init__(self, graph: Graph, model: Any) -> None:
        self.graph = graph
        self.model = model

    def run(self, env: dict[str, np.ndarray]) -> None:
        env.update(self.model.run_dict({n: env[n] for n in self.model.input_names}))


class _LazyStep:
    """A segment whose shapes depend on host outputs: compiled per input-shape signature. Past
    :data:`MAX_SHAPE_SIGNATURES` signatures (data that changes sizes on every call would compile on
    every call), new signatures run the segment with the reference executor, with one warning."""

    def __init__(self, graph: Graph, compile_fn: CompileFn) -> None:
        self.graph = graph
        self._compile = compile_fn
        self.models: dict[tuple[tuple[int, ...], ...], Any] = {}  # shape signature -> compiled model
        self.host_runs = 0  # calls run with the reference executor (signature limit reached)
        self._lock = threading.Lock()

    def run(self, env: dict[str, np.ndarray]) -> None:
        key = tuple(env[n].shape for n in self.graph.inputs)
        model = self.models.get(key)
        if model is None:
            with self._lock:
                model = self.models.get(key)
                if model is None and len(self.models) < MAX_SHAPE_SIGNATURES:
                    shapes = dict(zip(self.graph.inputs, key, strict=True))
                    log.info("compiling segment %s for shapes %s", self.graph.name, shapes)
                    model = self._compile(specialize(self.graph, shapes))
                    self.models[key] = model
                elif model is None:
                    self.host_runs += 1
                    if self.host_runs == 1:
                        warnings.warn(f"tessera: segment {self.graph.name!r} was compiled for {len(self.models)} "
                                      "shape signatures (MAX_SHAPE_SIGNATURES); new ones run on the host with "
                                      "the reference executor", HostFallbackWarning, stacklevel=3)
        if model is None:
            outs = run_reference(self.graph, {n: env[n] for n in self.graph.inputs})
            env.update((n, np.array(a)) for n, a in outs.items())  # fresh arrays, like compiled code
        else:
            env.update(model.run_dict({n: env[n] for n in model.input_names}))


class _HostStep:
    """One operator run with its registry reference implementation."""

    def __init__(self, graph: Graph, node: Node) -> None:
        self.node = node
        self.types = {o: graph.types[o] for o in node.outputs if o}

    def run(self, env: dict[str, np.ndarray]) -> None:
        env.update(run_node(self.node, [env[v] if v else None for v in self.node.inputs], self.types))


_Step = _CompiledStep | _LazyStep | _HostStep


# ---- the model ---------------------------------------------------------------------------------


@dataclass
class SegmentedModel:
    """A compiled model with host-fallback operators: called like a
    :class:`~tessera.runtime.CompiledModel` (inputs positionally or as one mapping by name;
    returns the list of outputs, fresh arrays), runs its steps in order. In-process only."""

    name: str
    input_specs: list[TensorSpec]
    output_names: list[str]
    steps: list[_Step]
    host_ops: list[HostOp]
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # read by host ops or outputs
    compile_seconds: float = 0.0
    _drop: list[list[str]] = field(init=False, repr=False)  # values dead after each step
    _fresh: set[str] = field(init=False, repr=False)  # values compiled code writes into new arrays

    def __post_init__(self) -> None:
        self._fresh = set()
        last: dict[str, int] = {}
        for k, step in enumerate(self.steps):
            if isinstance(step, _HostStep):
                reads = [v for v in step.node.inputs if v]
            else:
                reads = step.graph.inputs
                self._fresh.update(step.graph.outputs)
            for v in reads:
                last[v] = k
        keep = set(self.output_names)
        self._drop = [[] for _ in self.steps]
        for v, k in last.items():
            if v not in keep and v not in self.constants:
                self._drop[k].append(v)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.input_specs]

    @property
    def num_threads(self) -> int:
        models = self.compiled_models()
        return models[0].num_threads if models else 1

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        for m in self.compiled_models():
            m.num_threads = n

    @property
    def step_kinds(self) -> list[str]:
        """``"compiled"``, ``"lazy"`` (compiled per shape signature) or ``"host"`` per step, in order."""
        kinds = {_CompiledStep: "compiled", _LazyStep: "lazy", _HostStep: "host"}
        return [kinds[type(s)] for s in self.steps]

    def compiled_models(self) -> list[Any]:
        """The compiled segment models built so far (eager ones, then each lazy one's per shape)."""
        out: list[Any] = []
        for s in self.steps:
            if isinstance(s, _CompiledStep):
                out.append(s.model)
            elif isinstance(s, _LazyStep):
                out.extend(s.models.values())
        return out

    def __call__(self, *args: Any) -> list[np.ndarray]:
        """Run the model; inputs positionally or as one mapping by input name."""
        values = bind_inputs(self.name, self.input_specs, args)
        env: dict[str, np.ndarray] = dict(self.constants)
        env.update((s.name, check_input(s, v)) for s, v in zip(self.input_specs, values, strict=True))
        for step, dead in zip(self.steps, self._drop, strict=True):
            step.run(env)
            for v in dead:
                env.pop(v, None)
        # inputs, constants and host outputs (which may view their inputs) are copied out
        return [env[o] if o in self._fresh else np.array(env[o]) for o in self.output_names]

    def run_dict(self, *args: Any) -> dict[str, np.ndarray]:
        """Like calling the model, but returns ``{output name: array}``."""
        return dict(zip(self.output_names, self(*args), strict=True))

    def save(self, path: Any) -> None:
        """Always raises :class:`HostFallbackSaveError` (see the module docstring)."""
        raise self._save_error()

    @property
    def library_bytes(self) -> bytes:
        # what save_artifact reads first: make it fail with the reason, before anything is written
        raise self._save_error()

    def _save_error(self) -> HostFallbackSaveError:
        ops = ", ".join(str(h) for h in self.host_ops)
        return HostFallbackSaveError(
            f"model {self.name!r} cannot be saved as an artifact: it runs {ops} on the host with Tessera's "
            "reference implementations (and compiles the segments whose shapes depend on their outputs at run "
            "time), which an artifact, one compiled library run with only NumPy, cannot carry. Use the model "
            "in-process, or save a model without these operators"
        )

    def __repr__(self) -> str:
        sig = ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}" for s in self.input_specs)
        return (f"SegmentedModel({self.name!r}, ({sig}) -> {len(self.output_names)} output(s), "
                f"steps=[{', '.join(self.step_kinds)}])")


def compile_segmented(g: Graph, compile_fn: CompileFn, stacklevel: int = 2) -> SegmentedModel | None:
    """Plan ``g`` (static inputs, optimized) into compiled segments and host operators, compile the
    static segments with ``compile_fn`` and warn once naming the host operators. None if no
    operator needs the host (the caller's compile error stands)."""
    plan = plan_segments(g)
    if not plan.host:
        return None
    consumers: dict[str, set[int]] = {}  # value -> index of the steps reading it
    groups: list[tuple[str, list[Node]]] = []
    for static, dynamic, hosted in plan.levels:
        groups += [("static", static), ("dynamic", dynamic)] + [("host", [n]) for n in hosted]
    groups = [(kind, nodes) for kind, nodes in groups if nodes]
    for k, (_, nodes) in enumerate(groups):
        for n in nodes:
            for v in n.inputs:
                if v:
                    consumers.setdefault(v, set()).add(k)
    graph_outputs = set(g.outputs)
    steps: list[_Step] = []
    for k, (kind, nodes) in enumerate(groups):
        if kind == "host":
            steps.append(_HostStep(g, nodes[0]))
            continue
        defined = [o for n in nodes for o in n.outputs if o]
        outs = [o for o in defined if o in graph_outputs or consumers.get(o, set()) - {k}]
        if not outs:
            continue
        sub = _subgraph(g, nodes, outs, f"seg{k}")
        if kind == "static":
            steps.append(_CompiledStep(sub, compile_fn(sub)))
        else:
            steps.append(_LazyStep(sub, compile_fn))
    ops = ", ".join(str(h) for h in plan.host)
    warnings.warn(f"tessera: model {g.name!r}: {len(plan.host)} operator(s) run on the host with their reference "
                  f"implementation between compiled segments: {ops}", HostFallbackWarning, stacklevel=stacklevel)
    host_reads = {v for s in steps if isinstance(s, _HostStep) for v in s.node.inputs if v}
    constants = {v: a for v, a in g.constants.items() if v in host_reads or v in graph_outputs}
    specs = [TensorSpec(n, g.types[n].dtype.np.name, tuple(int(d) for d in g.types[n].shape)) for n in g.inputs]
    return SegmentedModel(g.name, specs, list(g.outputs), steps, plan.host, constants)

