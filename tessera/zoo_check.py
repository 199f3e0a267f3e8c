"""The main job: import every zoo model through both frontends, run it with the reference
executor, and compare with PyTorch eager in one table."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from tessera.errors import TesseraError

TOLERANCE = 1e-4  # max |tessera - eager| / max |eager|, per output


def _rel_err(ref: np.ndarray, got: np.ndarray) -> float:
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) / scale


def check_zoo(models: Sequence[str] | None = None, frontends: Sequence[str] = ("torch", "onnx")) -> bool:
    """Print the zoo table; return True when every row is within TOLERANCE."""
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
    table = Table("model", "frontend", "ops", "params", "GFLOPs", "max abs diff", "rel err",
                  "import s", "run s", "status", title="Tessera zoo: reference executor vs PyTorch eager")
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
                table.add_row(name, fe, "", "", "", "", "", "", "", f"[red]error: {escape(str(e))}")
                continue
            flops = count_flops(specialize_like(g, feeds))
            diff = max(float(np.max(np.abs(r.astype(np.float64) - o))) for r, o in zip(ref, outs, strict=True))
            rel = max(_rel_err(r, o) for r, o in zip(ref, outs, strict=True))
            good = rel <= TOLERANCE and len(outs) == len(ref)
            ok &= good
            table.add_row(name, fe, str(len(g.nodes)), f"{g.num_parameters / 1e6:.2f} M",
                          f"{flops / 1e9:.2f}", f"{diff:.2e}", f"{rel:.2e}",
                          f"{t1 - t0:.1f}", f"{t2 - t1:.1f}", "[green]ok" if good else "[red]MISMATCH")
    console.print(table)
    console.print(f"tolerance: relative error (max abs diff / max abs eager output) <= {TOLERANCE:g}")
    return ok
