"""NPU targets: compile a model for an NPU description and run it on the simulator (+ host CPU).

``tessera.compile(model, target=<NPU description name or .toml path>)`` specializes and optimizes the graph,
picks the matrix precision from the description (``precision="auto"``: bf16 where listed, else int8 with
post-training calibration), partitions it (:mod:`tessera.codegen.npu.partition`), lowers every offloaded
matrix product to a tiled NPU program (tiling searched with the simulator's timing-only mode) and returns an
:class:`NpuCompiledModel`: calling it runs the device layers in the functional simulator and the other
operators on the host with the reference executor's NumPy kernels (not the C back-end, whose compile
time would dominate tests); ``.report()`` gives per-layer cycles, utilization and bound and end-to-end
totals.

Host/device transfers: device layers read and write DRAM inside their programs (counted by the
simulator). The host's side is charged at the DRAM bandwidth ("host" cycles): writing each layer's
runtime operands in the device layout (encoded, im2col'd, block-major) and reading its output back.
Host operators' compute time is not modeled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera.codegen.npu.gemm import Tiling, emit_gemm
from tessera.codegen.npu.lower import LayerData, input_bytes, lower_layer, read_output
from tessera.codegen.npu.machine import Machine, machine_from
from tessera.codegen.npu.partition import DeviceLayer, HostStep, VectorLayer, partition
from tessera.codegen.npu.search import choose_tiling
from tessera.codegen.npu.vector import EltwiseSpec, emit_eltwise
from tessera.errors import CompileError
from tessera.graph.ir import Graph
from tessera.graph.passes.quantize import QuantizationPlan, choose_precision, quantize
from tessera.graph.registry import get_op, normalize_attrs
from tessera.graph.signature import bind_inputs
from tessera.npu.dtypes import decode, encode
from tessera.npu.hw import NpuDescription, is_description_name, load_description
from tessera.npu.isa import Program, validate


def is_npu_target(target: Any) -> bool:
    """Whether ``target`` names an NPU description (built-in name, ``npu-*.toml`` path or object)."""
    if isinstance(target, NpuDescription):
        return True
    if not isinstance(target, str):
        return False
    if is_description_name(target):
        return True
    if target.endswith(".toml"):
        import tomllib
        from pathlib import Path

        try:
            data = tomllib.loads(Path(target).read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return False
        return "matrix" in data
    return False


def simulate_program(program: Program, desc: NpuDescription, dram: np.ndarray | int, functional: bool) -> Any:
    """Run a validated ``program`` on the simulator (``dram``: the image, or its size for timing-only)."""
    from tessera.npu.sim import simulate

    return simulate(program, desc, dram, functional=functional, check=False)


@dataclass
class CompiledLayer:
    """A device layer: its data layout, tiling, program and timing-only simulation result."""

    data: LayerData
    tiling: Tiling
    program: Program
    sim: Any
    consts: list[tuple[int, np.ndarray]] = field(default_factory=list)

    @property
    def layer(self) -> DeviceLayer:
        return self.data.layer


@dataclass
class CompiledVectorLayer:
    """An elementwise layer on the vector unit: its spec, program and timing-only simulation result."""

    layer: VectorLayer
    spec: EltwiseSpec
    program: Program
    sim: Any

    @property
    def dram_bytes(self) -> int:
        return _align(self.spec.out_addr + self.spec.nbytes)

    @property
    def host_bytes(self) -> int:
        return 3 * self.spec.nbytes

    def run(self, desc: NpuDescription, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
        """Functional simulation: (float32 output, simulator seconds)."""
        s = self.spec
        dram = np.zeros(self.dram_bytes, np.uint8)
        pad = s.rows * s.width - a.size
        for addr, x in ((s.a_addr, a), (s.b_addr, b)):
            data = encode(np.pad(np.asarray(x, np.float32).reshape(-1), (0, pad)), s.dtype)
            dram[addr: addr + data.size] = data
        t0 = time.perf_counter()
        res = simulate_program(self.program, desc, dram, functional=True)
        secs = time.perf_counter() - t0
        y = decode(res.dram, s.out_addr, (s.rows * s.width,), s.dtype)[: a.size]
        return y.astype(np.float32).reshape(self.layer.shape), secs


def _align(n: int) -> int:
    return -(-n // 64) * 64


@dataclass
class LayerRow:
    """One line of the report."""

    name: str
    ops: str
    macs: int
    cycles: int
    utilization: float
    bound: str
    dram_bytes: int
    tiling: str
    matrix: bool = True  # a conv/matmul layer (counts for the MAC utilization over conv/matmul time)


@dataclass
class NpuReport:
    """Per-layer figures and end-to-end totals of a compiled model."""

    target: str
    precision: str
    peak_macs_per_cycle: int
    clock_ghz: float
    layers: list[LayerRow]
    host_ops: int
    host_bytes: int
    host_cycles: int
    sim_seconds: float
    compile_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device_cycles(self) -> int:
        """Cycles of the conv/matmul layers."""
        return sum(r.cycles for r in self.layers if r.matrix)

    @property
    def vector_cycles(self) -> int:
        return sum(r.cycles for r in self.layers if not r.matrix)

    @property
    def total_cycles(self) -> int:
        return self.device_cycles + self.vector_cycles + self.host_cycles

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def matrix_utilization(self) -> float:
        """Useful MACs / (peak MACs/cycle x cycles of the conv/matmul layers)."""
        c = self.device_cycles
        return self.macs / (self.peak_macs_per_cycle * c) if c else 0.0

    @property
    def end_to_end_utilization(self) -> float:
        c = self.total_cycles
        return self.macs / (self.peak_macs_per_cycle * c) if c else 0.0

    @property
    def dram_bytes(self) -> int:
        return sum(r.dram_bytes for r in self.layers) + self.host_bytes

    def table(self) -> str:
        """The per-layer table and the totals as plain text."""
        w = max([len(r.name) for r in self.layers] + [10])
        lines = [f"{'layer':<{w}}  {'ops':<22} {'MMACs':>9} {'cycles':>11} {'util':>6} {'bound':<8} "
                 f"{'DRAM KiB':>9}  tiling"]
        for r in self.layers:
            lines.append(f"{r.name:<{w}}  {r.ops[:22]:<22} {r.macs / 1e6:9.2f} {r.cycles:11d} "
                         f"{r.utilization:6.1%} {r.bound:<8} {r.dram_bytes / 1024:9.1f}  {r.tiling}")
        lines.append(f"{'host':<{w}}  {f'{self.host_ops} op(s)':<22} {'':>9} {self.host_cycles:11d} {'':>6} "
                     f"{'dram':<8} {self.host_bytes / 1024:9.1f}  transfers only")
        ms = self.total_cycles / (self.clock_ghz * 1e6)
        lines += [
            f"target {self.target} ({self.precision}), peak {self.peak_macs_per_cycle} MACs/cycle",
            f"total cycles {self.total_cycles:,} ({ms:.3f} ms at {self.clock_ghz:g} GHz); "
            f"conv/matmul cycles {self.device_cycles:,}; vector cycles {self.vector_cycles:,}",
            f"MAC utilization: {self.matrix_utilization:.1%} over conv/matmul time, "
            f"{self.end_to_end_utilization:.1%} end to end",
            f"DRAM bytes {self.dram_bytes:,} (host transfers {self.host_bytes:,}); "
            f"simulation wall time {self.sim_seconds:.2f} s; compile {self.compile_seconds:.2f} s",
        ]
        return "\n".join(lines)


class NpuCompiledModel:
    """A model compiled for an NPU description: callable with NumPy inputs (list of outputs)."""

    def __init__(self, graph: Graph, desc: NpuDescription, machine: Machine, precision: str,
                 plan: QuantizationPlan | None, steps: list[DeviceLayer | VectorLayer | HostStep],
                 layers: dict[str, CompiledLayer | CompiledVectorLayer], compile_seconds: float,
                 sim_seconds: float) -> None:
        self.graph = graph
        self.desc = desc
        self.machine = machine
        self.precision = precision
        self.plan = plan
        self.steps = steps
        self.layers = layers
        self.compile_seconds = compile_seconds
        self.sim_seconds = sim_seconds
        self.last_run_sim_seconds = 0.0

    def __call__(self, *inputs: Any) -> list[np.ndarray]:
        """Run the model; inputs positionally or as one mapping by input name (like CompiledModel)."""
        out = self.run_dict(inputs[0] if len(inputs) == 1 and isinstance(inputs[0], Mapping) else list(inputs))
        return [out[n] for n in self.graph.outputs]

    def run_dict(self, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run with the functional simulator; outputs by name."""
        g = self.graph
        feeds, _ = bind_inputs(g, inputs)
        env: dict[str, np.ndarray] = dict(g.constants)
        env.update(feeds)
        t_sim = 0.0
        for step in self.steps:
            if isinstance(step, HostStep):
                node = step.node
                op = get_op(node.op)
                outs = op.reference([env[i] if i else None for i in node.inputs], normalize_attrs(op, node),
                                    len(node.outputs))
                for name, v in zip(node.outputs, outs, strict=False):
                    if name:
                        env[name] = np.asarray(v).astype(g.types[name].dtype.np, copy=False)
                continue
            cl = self.layers[step.tag]
            if isinstance(cl, CompiledVectorLayer):
                env[step.out], secs = cl.run(self.desc, env[step.a], env[step.b])
                t_sim += secs
                continue
            ld = cl.data
            dram = np.zeros(ld.dram_bytes, np.uint8)
            b = env.get(step.b) if step.kind == "batched" else None
            for addr, data in cl.consts + input_bytes(ld, cl.tiling, env[step.a], b):
                dram[addr: addr + data.size] = data
            t0 = time.perf_counter()
            res = simulate_program(cl.program, self.desc, dram, functional=True)
            t_sim += time.perf_counter() - t0
            env[step.out] = read_output(ld, cl.tiling, res.dram)
        self.last_run_sim_seconds = t_sim
        return {o: env[o] for o in g.outputs}

    def report(self) -> NpuReport:
        """Per-layer cycles, utilization, bound and DRAM bytes (timing-only simulation), plus totals."""
        peak = self.machine.macs_per_cycle
        rows = []
        host_ops = host_bytes = 0
        for step in self.steps:
            if isinstance(step, HostStep):
                host_ops += 1
                continue
            cl = self.layers[step.tag]
            if isinstance(cl, CompiledVectorLayer):
                host_bytes += cl.host_bytes
                rows.append(LayerRow(step.tag, "+".join(n.op for n in step.nodes), 0, int(cl.sim.cycles), 0.0,
                                     cl.sim.bound, int(cl.sim.dram_bytes), f"vector {cl.spec.rows}x{cl.spec.width} "
                                     f"{cl.spec.dtype}", matrix=False))
                continue
            host_bytes += cl.data.host_bytes
            cycles = int(cl.sim.cycles)
            rows.append(LayerRow(step.tag, "+".join(n.op for n in step.nodes), step.macs, cycles,
                                 step.macs / (peak * cycles) if cycles else 0.0, cl.sim.bound,
                                 int(cl.sim.dram_bytes), str(cl.tiling)))
        host_cycles = int(np.ceil(host_bytes / self.machine.dram_bytes_per_cycle))
        return NpuReport(self.desc.name, self.precision, peak, self.machine.clock_ghz, rows, host_ops, host_bytes,
                         host_cycles, self.sim_seconds, self.compile_seconds)


def compile_graph_npu(
    g: Graph, target: str | NpuDescription, precision: str = "auto",
    calibration: Sequence[Sequence[np.ndarray] | Mapping[str, np.ndarray]] | None = None,
    calibration_method: str = "minmax", search: bool = True, optimize: bool = True,
    plan: QuantizationPlan | None = None,
) -> NpuCompiledModel:
    """Compile a graph with static input shapes for an NPU (see module docstring). ``plan``: a
    quantization plan already calibrated for this (optimized) graph, reused instead of calibrating."""
    t0 = time.perf_counter()
    desc = load_description(target)
    machine = machine_from(desc)
    prec = choose_precision(precision, machine.dtype_pairs)
    if optimize:
        from tessera.graph.passes import optimize as run_passes

        g = run_passes(g)
    for v in g.inputs:
        if not g.types[v].is_static:
            raise CompileError(f"input {v!r} of {g.name!r} has symbolic dims {g.types[v]}; pass input_shapes")
    if prec == "int8" and plan is None:
        if not calibration:
            raise CompileError(f"target {desc.name} computes in int8: pass calibration inputs "
                               f"(calibration=[inputs, ...]) for post-training quantization")
        plan = quantize(g, calibration, calibration_method)
    steps = partition(g, machine)
    layers: dict[str, CompiledLayer | CompiledVectorLayer] = {}
    sim_seconds = 0.0

    def measure(program: Program, dram_bytes: int) -> tuple[float, Any]:
        nonlocal sim_seconds
        ts = time.perf_counter()
        res = simulate_program(program, desc, dram_bytes, functional=False)
        sim_seconds += time.perf_counter() - ts
        return float(res.cycles), res

    for step in steps:
        if isinstance(step, VectorLayer):
            nbytes = _align(step.numel * 4)
            spec = EltwiseSpec.for_numel(step.numel, machine, step.dtype, step.act, 0, nbytes, 2 * nbytes)
            program = Program(emit_eltwise(spec, machine, step.tag))
            validate(program, desc, 3 * nbytes)
            _, res = measure(program, 3 * nbytes)
            layers[step.tag] = CompiledVectorLayer(step, spec, program, res)
            continue
        if not isinstance(step, DeviceLayer):
            continue
        ld = lower_layer(step, machine, prec, plan)
        tiling = choose_tiling(ld.spec, machine, desc.hash, ld.dram_bytes, measure if search else None,
                               tag=step.tag)
        program = Program(emit_gemm(ld.spec, tiling, machine, step.tag))
        validate(program, desc, ld.dram_bytes)
        _, res = measure(program, ld.dram_bytes)
        layers[step.tag] = CompiledLayer(ld, tiling, program, res, ld.const_bytes(tiling))
    return NpuCompiledModel(g, desc, machine, prec, plan, steps, layers, time.perf_counter() - t0, sim_seconds)
