"""The ``tessera`` command line: inspect, run, export and check models.

On bad input every command prints one ``error: ...`` line on stderr and exits with status 2;
``--debug`` shows the traceback instead."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tessera.errors import TesseraError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file, a saved .tsr graph, or a zoo model name")
    p.add_argument("--frontend", choices=("torch", "onnx"), default="torch",
                   help="import path for zoo models (default: torch)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description="Tessera deep-learning compiler")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="show a model's ops, parameters, FLOPs, inputs and outputs")
    _add_model_args(p)
    p.add_argument("--graph", action="store_true", help="also print the graph IR as text")
    p.add_argument("--optimize", action="store_true", help="run the graph passes first")

    p = sub.add_parser("run", help="run a model with the reference executor on .npy inputs")
    _add_model_args(p)
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input tensor (repeat per input); zoo models default to their example inputs")
    p.add_argument("--output", metavar="OUT.npz", help="save outputs under the model's output names")

    p = sub.add_parser("export", help="export a zoo model to ONNX (dynamic batch/seq axes)")
    p.add_argument("name", help="zoo model name")
    p.add_argument("out", help="output .onnx path")

    p = sub.add_parser("zoo", help="import every zoo model through both frontends and compare with eager")
    p.add_argument("--models", help="comma-separated subset of the zoo")
    p.add_argument("--frontends", default="torch,onnx", help="comma-separated frontends (torch,onnx)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except TesseraError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from tessera.api import load_model
    from tessera.graph.analysis import count_flops

    g = load_model(args.model, args.frontend)
    if args.optimize:
        from tessera.graph.passes import optimize

        g = optimize(g)
    console = Console()
    console.print(f"[bold]{escape(g.name)}[/bold]: {len(g.nodes)} ops, {g.num_parameters:,} parameters, "
                  f"FLOPs {_fmt_flops(count_flops(g))}")
    io = Table("kind", "name", "type", title="signature")
    for name in g.inputs:
        io.add_row("input", escape(name), escape(str(g.types[name])))
    for name in g.outputs:
        io.add_row("output", escape(name), escape(str(g.types[name])))
    console.print(io)
    hist = Table("op", "count", title="operators")
    for op, n in g.op_histogram().items():
        hist.add_row(escape(op), str(n))
    console.print(hist)
    if args.graph:
        print(g)
    return 0


def _fmt_flops(f: object) -> str:
    return f"{f / 1e9:.3f} G" if isinstance(f, int) else str(f)


def _load_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise TesseraError(f"--input must be NAME=FILE.npy, got {spec!r}")
        try:
            feeds[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise TesseraError(f"cannot read input {name!r} from {file}: {e}") from e
    return feeds


def _cmd_run(args: argparse.Namespace) -> int:
    from tessera.api import load_model
    from tessera.graph.reference import run_reference

    g = load_model(args.model, args.frontend)
    feeds: dict[str, np.ndarray] | list[np.ndarray] = _load_inputs(args.input)
    if not feeds and not Path(args.model).exists():
        from tessera.models import get_model

        feeds = [t.numpy() for t in get_model(args.model).example_inputs]
    outs = run_reference(g, feeds)
    for name, v in outs.items():
        print(f"{name}: {v.dtype}{list(v.shape)} min {v.min():.6g} max {v.max():.6g}")
    if args.output:
        from tessera.utils import atomic_output

        with atomic_output(args.output) as tmp, open(tmp, "wb") as f:
            np.savez(f, **outs)
        print(f"saved {len(outs)} output(s) to {args.output}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tessera.models import MODEL_NAMES, get_model

    if args.name not in MODEL_NAMES:
        raise TesseraError(f"unknown zoo model {args.name!r} (zoo: {', '.join(MODEL_NAMES)})")
    get_model(args.name).export_onnx(Path(args.out))
    print(f"exported {args.name} to {args.out}")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from tessera.zoo_check import check_zoo

    models = args.models.split(",") if args.models else None
    return 0 if check_zoo(models, args.frontends.split(",")) else 1


_COMMANDS = {"inspect": _cmd_inspect, "run": _cmd_run, "export": _cmd_export, "zoo": _cmd_zoo}


if __name__ == "__main__":
    sys.exit(main())
