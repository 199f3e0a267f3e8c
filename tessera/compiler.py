"""The CPU compiler driver: graph → fused kernels → loop IR → C → shared library → runtime.

Steps: specialize symbolic dims to concrete shapes, run the graph passes, partition into
fusion groups, instantiate each group's compute definitions as tensor expressions, build
stages, schedule them (tuned records or generic default rules), emit loop IR, render C,
build one shared library, plan activation memory, and wrap it all as a runtime
:class:`~tessera.runtime.CompiledModel`.
"""

from __future__ import annotations

import datetime
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import CompileError
from tessera.graph.ir import Graph
from tessera.graph.passes import winograd
from tessera.graph.specialize import specialize
from tessera.loop.fusion import FusionGroup, partition, view_source
from tessera.loop.instantiate import instantiate_group
from tessera.loop.ir import Kernel
from tessera.loop.stages import kernel_flops
from tessera.schedule.build import KernelBuilder
from tessera.schedule.primitives import Step
from tessera.schedule.rules import schedule_stages
from tessera.targets import CpuTarget, load_target
from tessera.targets.host import is_native

log = logging.getLogger("tessera.compiler")
ALIGN = 64


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass
class CompiledKernel:
    """One generated kernel and where its arguments live."""

    group: FusionGroup
    kernel: Kernel
    args: list[str]  # value names (inputs then outputs) bound to the kernel params
    schedules: dict[str, list[Step]]
    tuned: bool = False  # schedules came from the tuning database
    flops: int = 0  # arithmetic per call (a multiply-add counts 2), as the scheduled stages compute it


@dataclass
class Compilation:
    """Everything a compile produced (for reports, tests and the debug dump)."""

    graph: Graph
    kernels: list[CompiledKernel]
    source: str
    library: Path
    manifest: Any
    weights: np.ndarray
    views: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def resolve_target(target: str | CpuTarget) -> CpuTarget:
    return target if isinstance(target, CpuTarget) else load_target(target)


def _static(g: Graph, input_shapes: Mapping[str, Any] | None) -> Graph:
    symbols = sorted({s for n in g.inputs for s in g.types[n].symbols})
    if input_shapes:
        return specialize(g, input_shapes)
    if symbols:
        raise CompileError(
            f"model {g.name!r} has symbolic input dims ({', '.join(symbols)}); pass input_shapes, e.g. "
            + "{" + ", ".join(f"'{s}': 1" for s in symbols) + "}"
        )
    return g


def lower_group(g: Graph, group: FusionGroup, name: str, target: CpuTarget,
                schedules: Mapping[str, list[Step]] | None = None, tuned: Any = None) -> CompiledKernel:
    """Instantiate a group's compute definitions and emit its scheduled kernel. Schedules: the given
    ones, else ``tuned(group_compute, target)`` (a tuning-database lookup; None = no record), else
    the default rules."""
    gc = instantiate_group(g, group)
    scheds = dict(schedules) if schedules else None
    if scheds is None and tuned is not None:
        scheds = tuned(gc, target)
    from_db = scheds is not None and not schedules
    if scheds is None:
        scheds = schedule_stages(gc.stages, target, frozenset(gc.constants))
    kernel = KernelBuilder(name, gc.inputs, gc.outputs, gc.constants).build(gc.stages, scheds)
    return CompiledKernel(group, kernel, list(group.inputs) + list(group.outputs), scheds, from_db,
                          kernel_flops(gc.stages))


def _kernel_name(k: int, group: FusionGroup) -> str:
    node = group.anchor or group.nodes[-1]
    op = re.sub(r"[^a-z0-9]", "", node.op.lower())[:24]
    return f"k{k}_{op}"


def compile_graph(
    g: Graph,
    target: str | CpuTarget = "host",
    input_shapes: Mapping[str, Any] | None = None,
    optimize: bool = True,
    explain_fusion: list[str] | None = None,
    profile: bool = False,
    tuning: Any = None,
) -> Compilation:
    """Compile a graph for a CPU target (see module docstring). ``tuning``: a tuning database (path
    or :class:`~tessera.tune.TuningDB`) whose best records replace default schedules; None = the
    default database when it exists; False = default schedules only."""
    from tessera.codegen.c import c_string, render_kernel, render_module
    from tessera.loop.computes.index_check import CHECKED_OPS
    from tessera.runtime.memory_plan import BufferLife, plan_memory
    from tessera.runtime.program import (
        CompileInfo,
        Manifest,
        MemoryStats,
        TargetInfo,
        TensorSpec,
        WeightSpec,
        abi_words,
        render_abi_c,
    )
    from tessera.targets.toolchain import build_shared_library

    t0 = time.perf_counter()
    tgt = resolve_target(target)
    g = winograd.for_cpu(_prepare(g, input_shapes, optimize))
    for v in g.inputs + g.outputs:
        if not g.types[v].is_static:
            raise CompileError(f"value {v!r} has a data-dependent shape {g.types[v]}; cannot compile statically")
    if len(set(g.outputs)) != len(g.outputs):
        raise CompileError(f"model {g.name!r} lists an output more than once: {g.outputs}")
    groups = partition(g, explain_fusion)
    from tessera.tune.apply import tuned_lookup

    tuned = tuned_lookup(tuning)

    # ---- lower every kernel group; views alias their source ----------------------------------
    views: dict[str, str] = {}
    kernels: list[CompiledKernel] = []
    for grp in groups:
        if grp.kind == "view":
            node = grp.nodes[0]
            src = view_source(g, node)
            assert src is not None
            views[grp.outputs[0]] = views.get(src, src)
            continue
        kernels.append(lower_group(g, grp, _kernel_name(len(kernels), grp), tgt, tuned=tuned))

    def root(v: str) -> str:
        return views.get(v, v)

    # ---- locations: inputs, outputs, weights, arena ------------------------------------------
    out_index = {v: k for k, v in enumerate(g.outputs)}
    in_index = {v: k for k, v in enumerate(g.inputs)}
    weights: list[tuple[str, np.ndarray]] = []
    w_offset: dict[str, int] = {}
    pos = 0
    used = {root(a) for ck in kernels for a in ck.args} | {root(v) for v in g.outputs}
    for name, arr in g.constants.items():
        if name in used:
            w_offset[name] = pos
            weights.append((name, np.ascontiguousarray(arr)))
            pos += _align(arr.nbytes)
    packed_offset: dict[tuple[int, int], int] = {}
    for step, ck in enumerate(kernels):  # pre-packed constant layouts made by the schedules
        for j, arr in enumerate(ck.kernel.attrs.get("packed_constants", [])):
            packed_offset[(step, j)] = pos
            weights.append((f"{ck.kernel.name}.packed{j}", arr))
            w_offset[f"{ck.kernel.name}.packed{j}"] = pos
            pos += _align(arr.nbytes)
    blob = np.zeros(pos, np.uint8)
    for name, arr in weights:
        blob[w_offset[name]: w_offset[name] + arr.nbytes] = arr.reshape(-1).view(np.uint8)

    lives: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}
    for step, ck in enumerate(kernels):
        for a in ck.args:
            r = root(a)
            if r in in_index or r in out_index or r in w_offset:
                continue
            sizes[r] = math.prod(int(d) for d in g.types[r].shape) * g.types[r].dtype.itemsize
            span = lives.setdefault(r, [step, step])
            span[0], span[1] = min(span[0], step), max(span[1], step)
        for w, buf in enumerate(ck.kernel.params[len(ck.args):len(ck.args) + ck.kernel.attrs["workspace"]]):
            key = f"__ws{step}_{w}"
            sizes[key] = buf.numel * np.dtype(_np_dtype(buf.dtype)).itemsize
            lives[key] = [step, step]
    plan = plan_memory([BufferLife(n, sizes[n], s[0], s[1]) for n, s in lives.items()], ALIGN)
    naive = sum(_align(sizes[n]) for n in lives)  # workspaces included, as in the planned arena

    def loc(v: str) -> str:
        r = root(v)
        if r in in_index:
            return f"inputs[{in_index[r]}]"
        if r in w_offset:  # before outputs: a constant that is also an output is copied out of the weights
            return f"(void*)(weights + {w_offset[r]})"
        if r in out_index:
            return f"outputs[{out_index[r]}]"
        return f"(void*)(arena + {plan.offsets[r]})"

    # ---- C source: kernels + entry --------------------------------------------------------------
    lanes = {dt: tgt.lanes(dt) for dt in ("f32", "f64", "i32", "i64", "i8", "u8")}
    rendered = []
    for ck in kernels:
        try:
            rendered.append(render_kernel(ck.kernel, lanes, tgt.intrinsics))
        except NotImplementedError as e:
            ops = ", ".join(f"{n.op} {n.name!r}" for n in ck.group.nodes)
            raise CompileError(f"kernel {ck.kernel.name} ({ops}): {e}") from e
    calls = []
    for step, ck in enumerate(kernels):
        args = [loc(a) for a in ck.args]
        args += [f"(void*)(arena + {plan.offsets[f'__ws{step}_{w}']})" for w in range(ck.kernel.attrs["workspace"])]
        args += [f"(void*)(weights + {packed_offset[(step, j)]})"
                 for j in range(len(ck.kernel.attrs["packed_constants"]))]
        calls.append(f"  {{ TSR_T0; {ck.kernel.name}({', '.join(args)}); TSR_T1({step}); }}")
        checked = [n for n in ck.group.nodes if n.op in CHECKED_OPS]
        if checked and "tsr_index_check(" in rendered[step]:
            where = ", ".join(f"{n.name!r} ({n.op})" for n in checked)
            calls.append(f"  tsr_note_where({c_string(('node ' if len(checked) == 1 else 'nodes ') + where)});")
    copies = []
    for k, v in enumerate(g.outputs):  # outputs no kernel writes: inputs, constants, aliases
        r = root(v)
        if r != v or r in in_index or r in w_offset:
            nbytes = math.prod(int(d) for d in g.types[v].shape) * g.types[v].dtype.itemsize
            src = loc(r)
            copies.append(f"  memcpy(outputs[{k}], {src}, {nbytes});")
    spec = [TensorSpec(n, g.types[n].dtype.np.name, tuple(int(d) for d in g.types[n].shape)) for n in g.inputs]
    ospec = [TensorSpec(n, g.types[n].dtype.np.name, tuple(int(d) for d in g.types[n].shape)) for n in g.outputs]
    entry = "\n".join([
        "/* per-kernel timing, compiled in with -DTSR_PROFILE (read with tsr_profile) */",
        "#ifdef TSR_PROFILE",
        f"static double tsr_prof[{max(len(kernels), 1)}];",
        "#define TSR_T0 int64_t tsr_t = tsr_ns()",
        "#define TSR_T1(k) tsr_prof[k] += 1e-9 * (double)(tsr_ns() - tsr_t)",
        "void tsr_profile(double* out) {",
        f"  for (int k = 0; k < {len(kernels)}; ++k) {{ out[k] = tsr_prof[k]; tsr_prof[k] = 0; }}",
        "}",
        "#else",
        "#define TSR_T0",
        "#define TSR_T1(k)",
        "#endif",
        "int tsr_run(void* const* inputs, void* const* outputs, char* weights, char* arena) {",
        "  (void)inputs; (void)outputs; (void)weights; (void)arena;",
        *calls, "  if (tsr_take_error()) return 1;  /* an index out of range: tsr_error_message says where */",
        *copies, "  return 0;", "}",
        "/* threads for this library's parallel loops (its own pool: no other runtime's setting applies) */",
        "void tsr_set_num_threads(int n) { tsr_pool_set_threads(n); }",
        render_abi_c(abi_words(spec, ospec, int(blob.nbytes), int(plan.arena_bytes))),
    ])
    source = ("#define TSR_PROFILE 1\n" if profile else "") + render_module(rendered, entry)
    library = build_shared_library(source, tgt, f"model_{len(kernels)}k")
    seconds = time.perf_counter() - t0

    features = tuple(f for f in tgt.isa if f in ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl",
                                                   "f16c", "asimd"))
    manifest = Manifest(
        model_name=g.name,
        target=TargetInfo(tgt.name, tgt.hash, tgt.arch, features),
        inputs=spec,
        outputs=ospec,
        weights_nbytes=int(blob.nbytes),
        arena_bytes=int(plan.arena_bytes),
        weights=[WeightSpec(n, w_offset[n], int(a.nbytes), a.dtype.name, tuple(a.shape)) for n, a in weights],
        memory=MemoryStats(int(plan.arena_bytes), int(naive)),
        compile=CompileInfo(_version(), datetime.datetime.now(datetime.UTC).isoformat(), seconds,
                            {"kernels": len(kernels), "views": len(views)}),
    )
    return Compilation(g, kernels, source, library, manifest, blob, views, seconds)


def _np_dtype(dt: str) -> np.dtype:
    from tessera.loop.te_eval import np_dtype

    return np_dtype(dt)


def _version() -> str:
    from tessera import VERSION

    return VERSION


def compile(  # noqa: A001  (the public name users expect: tessera.compile)
    model: Any,
    target: str | CpuTarget = "host",
    input_shapes: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
    frontend: str = "torch",
    optimize: bool = True,
    profile: bool = False,
    tuning: Any = None,
    host_fallback: bool = True,
    **npu_options: Any,
) -> Any:
    """Compile ``model`` (a Graph, an ``.onnx``/``.tsr`` path or a zoo name) for ``target``.

    Returns a callable :class:`~tessera.runtime.CompiledModel` (NumPy in, list of NumPy out); if
    some operators cannot be compiled statically (data-dependent output shapes, no compute
    definition), a :class:`~tessera.segmented.SegmentedModel` that runs them on the host between
    compiled segments (with a :class:`~tessera.segmented.HostFallbackWarning`);
    ``host_fallback=False`` raises the :class:`CompileError` instead. Symbolic dims
    need ``input_shapes`` (input name -> shape, or symbol -> size); zoo models default to their
    example inputs' shapes. An NPU description as ``target`` (``npu-gen2``)
    gives a :class:`~tessera.targets.npu_target.NpuCompiledModel`; ``npu_options`` (precision,
    calibration, ...) go to :func:`~tessera.targets.npu_target.compile_graph_npu`."""
    from tessera.runtime.compiled_model import CompiledModel
    from tessera.targets.npu_target import is_npu_target

    t0 = time.perf_counter()
    g, shapes = _load(model, frontend, input_shapes)
    if is_npu_target(target):
        return _compile_npu(model, g, shapes, target, optimize, npu_options)
    if npu_options:
        raise CompileError(f"unexpected option(s) {', '.join(npu_options)} for CPU target {target!r}")
    tgt = resolve_target(target)
    try:
        comp = compile_graph(g, tgt, shapes, optimize, profile=profile, tuning=tuning)
    except CompileError:
        if not host_fallback or not is_native(tgt):
            raise
        seg = _compile_with_host_fallback(_prepare(g, shapes, optimize), tgt, num_threads, profile, tuning)
        if seg is None:
            raise
        seg.compile_seconds = time.perf_counter() - t0
        return seg
    if not is_native(tgt):
        raise CompileError(
            f"built {comp.library} for {tgt.name}, which this machine cannot run; "
            "use tessera.compiler.compile_graph to get the library"
        )
    cm = CompiledModel(comp.library, comp.manifest, comp.weights, copy_weights=False, num_threads=num_threads)
    cm.compile_seconds = time.perf_counter() - t0  # type: ignore[attr-defined]
    cm.compilation = comp  # type: ignore[attr-defined]
    return cm


def _prepare(g: Graph, input_shapes: Mapping[str, Any] | None, optimize: bool) -> Graph:
    """What compile_graph does before partitioning: static shapes, then the graph passes."""
    from tessera.graph.passes import optimize as run_passes

    g = _static(g, input_shapes)
    return run_passes(g) if optimize else g


def _compile_with_host_fallback(g: Graph, tgt: CpuTarget, num_threads: int | None, profile: bool,
                                tuning: Any) -> Any:
    """A :class:`~tessera.segmented.SegmentedModel` for the prepared graph ``g`` whose plain compile
    failed: operators the compiler cannot handle run on the host between compiled segments. None
    if no operator needs the host (the compile error stands)."""
    from tessera.runtime.compiled_model import CompiledModel
    from tessera.segmented import compile_segmented

    def compile_segment(sub: Graph) -> Any:  # sub: static input shapes
        try:
            comp = compile_graph(sub, tgt, None, True, profile=profile, tuning=tuning)
        except CompileError:
            seg = _compile_with_host_fallback(_prepare(sub, None, True), tgt, num_threads, profile, tuning)
            if seg is None:
                raise
            return seg
        cm = CompiledModel(comp.library, comp.manifest, comp.weights, copy_weights=False, num_threads=num_threads)
        cm.compilation = comp  # type: ignore[attr-defined]
        return cm

    return compile_segmented(g, compile_segment, stacklevel=4)


def _compile_npu(model: Any, g: Graph, shapes: Any, target: Any, optimize: bool, options: dict[str, Any]) -> Any:
    """NPU targets; zoo models calibrate int8 on their example inputs unless given calibration data."""
    from tessera.targets.npu_target import compile_graph_npu

    if options.get("calibration") is None and isinstance(model, str) and not Path(model).exists():
        from tessera.models import MODEL_NAMES, get_model

        if model in MODEL_NAMES:
            options = {**options, "calibration": [[t.numpy() for t in get_model(model).example_inputs]]}
    return compile_graph_npu(_static(g, shapes), target, optimize=optimize, **options)


def _load(model: Any, frontend: str, input_shapes: Mapping[str, Any] | None) -> tuple[Graph, Any]:
    if isinstance(model, Graph):
        return model, input_shapes
    from tessera.api import load_model
    from tessera.models import MODEL_NAMES

    g = load_model(model, frontend)
    if input_shapes is None and isinstance(model, str) and model in MODEL_NAMES and not Path(model).exists():
        from tessera.models import get_model

        zm = get_model(model)
        input_shapes = {n: tuple(t.shape) for n, t in zip(g.inputs, zm.example_inputs, strict=True)}
    return g, input_shapes


def kernel_profile(model: Any) -> list[tuple[str, float]]:
    """Seconds spent per kernel since the last call, for a model compiled with ``profile=True``
    (for a :class:`~tessera.segmented.SegmentedModel`: each compiled segment's kernels so far,
    named ``segment:kernel``)."""
    import ctypes

    from tessera.segmented import SegmentedModel

    if isinstance(model, SegmentedModel):
        return [(f"{m.name}:{k}", t) for m in model.compiled_models() for k, t in kernel_profile(m)]
    comp: Compilation = model.compilation
    n = len(comp.kernels)
    buf = (ctypes.c_double * max(n, 1))()
    model._lib.tsr_profile(buf)
    return [(ck.kernel.name, buf[k]) for k, ck in enumerate(comp.kernels)]
