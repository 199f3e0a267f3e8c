"""The systems under test: PyTorch eager, torch.compile, ONNX Runtime, OpenVINO and Tessera.

Each ``prepare_*`` builds a ready-to-time runner for one workload, or raises ``Unavailable`` when
the system is not installed (the harness then skips it with a note; nothing is ever faked)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class Unavailable(Exception):
    """The system is not installed or not usable here (a skip, not a failure)."""


@dataclass
class Workload:
    """One (model, batch) point: the eager module, its inputs and the exported ONNX file."""

    model: str
    batch: int
    module: Any  # torch.nn.Module in eval mode
    inputs: tuple[Any, ...]  # torch tensors
    input_names: list[str]
    onnx_path: Path
    flops: float | None = None
    flops_source: str = ""

    @property
    def np_inputs(self) -> list[np.ndarray]:
        return [t.detach().cpu().numpy() for t in self.inputs]

    @property
    def feeds(self) -> dict[str, np.ndarray]:
        return dict(zip(self.input_names, self.np_inputs, strict=True))


@dataclass
class Runner:
    """A prepared system: ``run()`` does one inference; ``outputs(result)`` gives NumPy arrays."""

    run: Callable[[], Any]
    outputs: Callable[[Any], list[np.ndarray]]
    setup_s: float  # wall seconds to build/compile, including the first call where it compiles
    notes: list[str] = field(default_factory=list)
    compile_s: float | None = None  # Tessera: wall time of tessera.compile itself


def _flatten_torch(result: Any) -> list[np.ndarray]:
    if isinstance(result, (tuple, list)):
        return [np.asarray(r.detach().numpy()) for r in result]
    return [np.asarray(result.detach().numpy())]


def prepare_eager(w: Workload, threads: int) -> Runner:
    """PyTorch eager under ``torch.inference_mode``."""
    import torch

    torch.set_num_threads(threads)
    module, inputs = w.module, w.inputs

    def run() -> Any:
        with torch.inference_mode():
            return module(*inputs)

    return Runner(run, _flatten_torch, 0.0)


def prepare_inductor(w: Workload, threads: int) -> Runner:
    """``torch.compile`` (Inductor, default mode); the first call compiles and counts as setup."""
    import torch

    torch.set_num_threads(threads)
    torch._dynamo.reset()  # each (model, batch) compiles fresh, with static shapes
    compiled = torch.compile(w.module)
    inputs = w.inputs

    def run() -> Any:
        with torch.inference_mode():
            return compiled(*inputs)

    t0 = time.perf_counter()
    run()
    return Runner(run, _flatten_torch, time.perf_counter() - t0)


def prepare_onnxruntime(w: Workload, threads: int) -> Runner:
    """ONNX Runtime, CPU execution provider, all graph optimizations, ``threads`` intra-op threads."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise Unavailable("onnxruntime is not installed") from e
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(w.onnx_path), opts, providers=["CPUExecutionProvider"])
    feeds = w.feeds
    feed = {i.name: feeds[i.name] for i in sess.get_inputs()}

    def run() -> Any:
        return sess.run(None, feed)

    run()
    return Runner(run, lambda r: [np.asarray(x) for x in r], time.perf_counter() - t0)


def prepare_openvino(w: Workload, threads: int) -> Runner:
    """OpenVINO CPU plugin: static input shapes, ``threads`` threads, latency hint, f32 precision.

    f32 is pinned because OpenVINO otherwise runs bf16 on CPUs with native bf16 (e.g. AVX512_BF16),
    which would not be the same computation as the other systems."""
    try:
        import openvino as ov
    except ImportError as e:
        raise Unavailable("openvino is not installed (pip install openvino)") from e
    t0 = time.perf_counter()
    core = ov.Core()
    model = core.read_model(str(w.onnx_path))
    feeds = w.feeds
    names = [p.get_any_name() for p in model.inputs]
    model.reshape({n: ov.PartialShape(list(feeds[n].shape)) for n in names})
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    feed = {n: feeds[n] for n in names}
    n_out = len(compiled.outputs)

    def run() -> Any:
        request.infer(feed)
        return request

    def outputs(req: Any) -> list[np.ndarray]:
        return [np.array(req.get_output_tensor(i).data) for i in range(n_out)]

    run()
    return Runner(run, outputs, time.perf_counter() - t0)


def prepare_tessera(w: Workload, threads: int) -> Runner:
    """``tessera.compile(onnx, target="host")``; the compile call's wall time is reported separately."""
    import tessera

    try:
        compile_fn = tessera.compile
    except AttributeError as e:
        raise Unavailable("tessera.compile is not available yet") from e
    feeds = w.feeds
    shapes = {n: tuple(a.shape) for n, a in feeds.items()}  # the ONNX file has dynamic batch/seq axes
    t0 = time.perf_counter()
    model = compile_fn(str(w.onnx_path), target="host", input_shapes=shapes, num_threads=threads)
    compile_s = time.perf_counter() - t0
    model.num_threads = threads
    names: Sequence[str] | None = getattr(model, "input_names", None)
    args = [feeds[n] for n in names] if names else w.np_inputs

    def run() -> Any:
        return model(*args)

    run()
    notes = []
    reported = getattr(model, "compile_seconds", None)
    if reported is not None:
        notes.append(f"compile_seconds={float(reported):.1f}")
    return Runner(run, lambda r: [np.asarray(x) for x in r], time.perf_counter() - t0, notes, compile_s)


TESSERA = "Tessera"

SYSTEMS: dict[str, Callable[[Workload, int], Runner]] = {
    "PyTorch eager": prepare_eager,
    "torch.compile": prepare_inductor,
    "ONNX Runtime": prepare_onnxruntime,
    "OpenVINO": prepare_openvino,
    TESSERA: prepare_tessera,
}

# Short names for --systems.
ALIASES: dict[str, str] = {
    "eager": "PyTorch eager",
    "inductor": "torch.compile",
    "ort": "ONNX Runtime",
    "openvino": "OpenVINO",
    "tessera": TESSERA,
}


def versions() -> dict[str, str]:
    """Installed versions of the systems' packages ("not installed" where missing)."""
    out: dict[str, str] = {}
    for mod in ("torch", "onnxruntime", "openvino", "numpy", "tessera"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", None) or getattr(m, "VERSION", "?"))
        except ImportError:
            out[mod] = "not installed"
    return out
