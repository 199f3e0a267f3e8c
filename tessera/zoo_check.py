"""The main job: import every zoo model through both frontends, run it with the reference
executor and compiled for the host, and compare both with PyTorch eager in one table (errors and
latency medians)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from tessera.errors import TesseraError

TOLERANCE = 1e-4  # max |tessera - eager| / max |eager|, per output
TIMED_RUNS = 5  # eager and compiled calls timed alternately (medians)


def _rel_err(ref: np.ndarray, got: np.ndarray) -> float:
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) / scale


def _median_ms(fn: Callable[[], object], other: Callable[[], object]) -> tuple[float, float]:
    """Medians (ms) of ``fn`` and ``other`` timed alternately after one warm-up call each."""
    fn()
    other()
    a, b = [], []
    for _ in range(TIMED_RUNS):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        other()
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return float(np.median(a)) * 1e3, float(np.median(b)) * 1e3


def check_zoo(models: Sequence[str] | None = None, frontends: Sequence[str] = ("torch", "onnx"),
              compiled: bool = True) -> bool:
    """Print the zoo table; return True when every row is within TOLERANCE. ``compiled``: also
    compile each model for the host (tuning database records apply, as in ``tessera.compile``) and
    time it against eager."""
    import torch
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from tessera.api import load_zoo_model
    from tessera.graph.analysis import count_flops
    from tessera.graph.reference import run_reference
    from tessera.graph.specialize import specialize_like
    from tessera.models import MODEL_NAMES, get_model

    console = Console(width=170)
    from tessera.compiler import compile as compile_model

    title = "Tessera zoo: reference executor and compiled (host) vs PyTorch eager"
    cols = ["model", "frontend", "ops", "params", "GFLOPs", "max abs diff", "rel err", "import s", "run s"]
    if compiled:
        cols += ["compiled rel err", "compile s", "eager ms", "compiled ms", "speed-up"]
    table = Table(*cols, "status", title=title if compiled else "Tessera zoo: reference executor vs PyTorch eager")
    ok = True
    for name in models or MODEL_NAMES:
        zm = get_model(name)
        with torch.no_grad():
            eager = zm.module(*zm.example_inputs)
        eager_list = [eager] if isinstance(eager, torch.Tensor) else list(eager)
        ref = [t.detach().numpy() for t in eager_list]
        feeds = [t.numpy() for t in zm.example_inputs]
        for fe in frontends:
            t0 = time.perf_counter()
            try:
                g = load_zoo_model(name, fe)
                t1 = time.perf_counter()
                outs = list(run_reference(g, feeds).values())
                t2 = time.perf_counter()
            except TesseraError as e:
                ok = False
                table.add_row(name, fe, *[""] * (len(cols) - 2), f"[red]error: {escape(str(e))}")
                continue
            flops = count_flops(specialize_like(g, feeds))
            diff = max(float(np.max(np.abs(r.astype(np.float64) - o))) for r, o in zip(ref, outs, strict=True))
            rel = max(_rel_err(r, o) for r, o in zip(ref, outs, strict=True))
            good = rel <= TOLERANCE and len(outs) == len(ref)
            row = [name, fe, str(len(g.nodes)), f"{g.num_parameters / 1e6:.2f} M", f"{flops / 1e9:.2f}",
                   f"{diff:.2e}", f"{rel:.2e}", f"{t1 - t0:.1f}", f"{t2 - t1:.1f}"]
            status = "" if good else "reference MISMATCH"
            if compiled:
                try:
                    t3 = time.perf_counter()
                    model = compile_model(g, "host", input_shapes={n: f.shape for n, f in zip(g.inputs, feeds,
                                                                                               strict=True)})
                    t4 = time.perf_counter()
                    couts = model(*feeds)
                except TesseraError as e:
                    good = False
                    row += ["", "", "", "", ""]
                    status = f"compile error: {escape(str(e))}"
                else:
                    crel = max(_rel_err(r, o) for r, o in zip(ref, couts, strict=True))
                    cgood = crel <= TOLERANCE and len(couts) == len(ref)
                    good &= cgood
                    with torch.no_grad():
                        eager_ms, comp_ms = _median_ms(lambda m=zm: m.module(*m.example_inputs),
                                                       lambda c=model, f=feeds: c(*f))
                    row += [f"{crel:.2e}", f"{t4 - t3:.1f}", f"{eager_ms:.1f}", f"{comp_ms:.1f}",
                            f"{eager_ms / comp_ms:.2f}x"]
                    status = status or ("" if cgood else "compiled MISMATCH")
            ok &= good
            table.add_row(*row, "[green]ok" if good else f"[red]{status}")
    console.print(table)
    console.print(f"tolerance: relative error (max abs diff / max abs eager output) <= {TOLERANCE:g}"
                  + (f"; eager and compiled: medians of {TIMED_RUNS} alternating calls, batch 1, "
                     f"{torch.get_num_threads()} threads (benchmark against every peer: ./bench.sh)"
                     if compiled else ""))
    return ok
