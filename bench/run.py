"""Benchmark entry point: ``python -m bench.run [--models ...] [--batches 1,8] [--reps 10] [--json out.json]``.

Times PyTorch eager, torch.compile, ONNX Runtime, OpenVINO and Tessera on the same inputs with the
same thread count, round-robin, and relates every rate to the machine's measured FMA and GEMM peaks."""

from __future__ import annotations

import os
import sys


def _early_threads(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "2"


# BLAS/OpenMP pools size themselves when first loaded, so this must precede the NumPy/torch imports.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _early_threads(sys.argv))

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.harness import (  # noqa: E402
    MISMATCH_TOL,
    PointResult,
    first_line,
    load_average,
    machine_facts,
    measure,
    point_table,
    summary_table,
    tessera_flops,
    torch_flops,
)
from bench.kernels import kernel_table, profile_kernels  # noqa: E402
from bench.peak import PeakResult, fma_peak, numpy_gemm_peak  # noqa: E402
from bench.peers import ALIASES, SYSTEMS, TESSERA, Workload, versions  # noqa: E402

DEFAULT_MODELS = ("resnet50", "mobilenet_v2", "bert_base", "vit_b16")


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _non_negative(kind: type) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.sh", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=_csv, default=list(DEFAULT_MODELS), help="comma-separated zoo models")
    p.add_argument("--batches", type=lambda s: [int(x) for x in _csv(s)], default=[1, 8])
    p.add_argument("--reps", type=int, default=10, help="timed round-robin rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per system before timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--systems", type=_csv, default=list(ALIASES),
                   help=f"subset of {','.join(ALIASES)} (default: all)")
    p.add_argument("--gap-ms", type=_non_negative(float), default=0.0,
                   help="sleep between timed calls (lets spinning pools idle)")
    p.add_argument("--warm-calls", type=_non_negative(int), default=0,
                   help="untimed calls of a system right before each of its timed calls (steady-state latency)")
    p.add_argument("--kernels", type=_non_negative(int), default=8,
                   help="after timing, profile Tessera's kernels in the model and show the N heaviest (0: skip)")
    p.add_argument("--no-peak", action="store_true", help="skip the FMA/GEMM peak measurements")
    p.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    args = p.parse_args(argv)
    unknown = [s for s in args.systems if s not in ALIASES]
    if unknown:
        p.error(f"unknown systems {unknown}; choose from {', '.join(ALIASES)}")
    args.systems = [ALIASES[s] for s in args.systems]
    if "PyTorch eager" not in args.systems:
        args.systems.insert(0, "PyTorch eager")  # the reference every output is checked against
    return args


def measure_peaks(threads: int, enabled: bool = True) -> tuple[PeakResult, PeakResult]:
    """FMA-loop peak and NumPy GEMM rate, both with ``threads`` threads."""
    if not enabled:
        off = PeakResult(None, "", "skipped (--no-peak)")
        return off, off
    return fma_peak(threads), numpy_gemm_peak(threads)


def facts_table(facts: dict[str, object], vers: dict[str, str], fma: PeakResult, gemm: PeakResult) -> Table:
    t = Table(title="Machine", title_justify="left", show_header=False)
    t.add_column("key")
    t.add_column("value", overflow="fold")
    t.add_row("CPU", f"{facts['cpu']} ({' '.join(facts['simd'])})")  # type: ignore[arg-type]
    t.add_row("cores", f"{facts['threads_used']} threads used of {facts['logical_cpus']} logical CPUs")
    load = facts.get("load_avg_start")
    if load is not None:
        busy = " [bold yellow](busy: other processes compete for the cores; timings are noisy)[/]"
        t.add_row("load avg (1 min)", f"{load:.2f}{busy if load > 0.5 else ''}")
    t.add_row("versions", ", ".join(f"{k} {v}" for k, v in vers.items()))
    for label, pk in (("FMA peak", fma), ("NumPy GEMM", gemm)):
        t.add_row(label, f"{pk.gflops:.1f} GFLOP/s — {pk.detail}" if pk.gflops else f"n/a ({pk.error})")
    return t


def run_model(name: str, args: argparse.Namespace, tmp: Path, log: Console) -> list[PointResult]:
    """All batches of one zoo model; the ONNX file is exported once (dynamic batch/seq axes)."""
    import torch

    from tessera.models import get_model

    points: list[PointResult] = []
    onnx_path: Path | None = None
    tess_note = ""
    for batch in args.batches:
        log.print(f"[dim]{name} batch {batch}: building model[/]")
        zm = get_model(name, batch=batch)
        if onnx_path is None:
            onnx_path = tmp / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zm.export_onnx(onnx_path)
        w = Workload(name, batch, zm.module, zm.example_inputs, zm.input_names, onnx_path)
        w.flops = torch_flops(zm.module, zm.example_inputs)
        w.flops_source = "torch FlopCounterMode"
        try:
            tf = tessera_flops(onnx_path, w.np_inputs)
            tess_note = f"{tf / 1e9:.2f}" if tf else "symbolic"
        except Exception as e:  # noqa: BLE001
            tess_note = f"failed: {first_line(e)}"
        w.flops_source += f"; tessera count_flops: {tess_note}"
        results = measure(w, args.systems, args.threads, args.reps, args.warmup, args.gap_ms / 1e3,
                          log=lambda m: log.print(f"[dim]{m}[/]"), warm_calls=args.warm_calls)
        point = PointResult(name, batch, w.flops, w.flops_source, results)
        tess = point.get(TESSERA)
        if args.kernels and tess is not None and tess.median_ms is not None:
            log.print(f"[dim]{name} batch {batch}: profiling Tessera's kernels[/]")
            try:
                point.kernels = profile_kernels(onnx_path, w.feeds, args.threads, args.reps, args.gap_ms / 1e3)
            except Exception as e:  # noqa: BLE001 - the timings stand without the profile
                log.print(f"[yellow]{name}: kernel profile failed: {first_line(e)}[/]")
        points.append(point)
        del zm, w, results
        torch._dynamo.reset()
        gc.collect()
    return points


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # rich wraps at 80 columns when piped; the tables need more to stay readable in logs
    out = Console() if sys.stdout.isatty() else Console(width=200)
    log = Console(stderr=True)
    import torch

    torch.set_num_threads(args.threads)
    facts, vers = machine_facts(args.threads), versions()
    log.print("[dim]measuring machine peaks ...[/]")
    fma, gemm = measure_peaks(args.threads, not args.no_peak)
    out.print(facts_table(facts, vers, fma, gemm))
    missing = [s for s in args.systems if s not in SYSTEMS]
    assert not missing, missing
    points: list[PointResult] = []
    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as tmp:
        for name in args.models:
            try:
                new = run_model(name, args, Path(tmp), log)
            except Exception as e:  # noqa: BLE001 - one broken model must not hide the others
                out.print(f"[bold red]{name}: could not build/export: {first_line(e)}[/]")
                continue
            for p in new:
                out.print(point_table(p, fma.gflops, gemm.gflops))
                if p.kernels:
                    out.print(kernel_table(f"{p.model}  batch {p.batch}  —  Tessera's heaviest kernels in the model",
                                           p.kernels, fma.gflops, args.kernels))
                for s in p.systems:
                    if s.mismatch:
                        out.print(f"[bold red]!!! {p.model} batch {p.batch}: {s.system} output differs from "
                                  f"PyTorch eager: max rel err {s.rel_err:.2e} > {MISMATCH_TOL:g}[/]")
            points.extend(new)
    out.print(summary_table(points))
    warm = f" ({args.warm_calls} untimed call(s) right before each timed one)" if args.warm_calls else ""
    gap = f", {args.gap_ms:g} ms idle after each timed call" if args.gap_ms else ""
    out.print(f"[dim]median of {args.reps} round-robin rounds{warm}{gap} after {args.warmup} warm-up calls, "
              f"{args.threads} threads; max rel err = max|out - eager| / max|eager|; "
              "setup s = build + first call (Tessera: tessera.compile wall time)[/]")
    end_load = load_average()
    if end_load is not None:
        out.print(f"[dim]1-minute load average at the end: {end_load:.2f}[/]")
    if args.json:
        facts["load_avg_end"] = end_load
        doc = {"machine": facts, "versions": vers, "fma_peak": fma.to_json(), "numpy_gemm": gemm.to_json(),
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "results": [p.to_json() for p in points]}
        args.json.write_text(json.dumps(doc, indent=2))
        out.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
