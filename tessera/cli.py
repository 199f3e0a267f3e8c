"""The ``tessera`` command line: inspect, compile, run, export and check models; list targets.

On bad input every command prints one ``error: ...`` line on stderr and exits with status 2;
``--debug`` shows the traceback instead."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from tessera.cli_files import check_output_path, load_npy, os_error_message, save_npz
from tessera.errors import TesseraError
from tessera.limits import format_bytes

_MAX_THREADS = 256  # the generated pool's TSR_MAX_WORKERS (255) plus the caller


def _threads(text: str) -> int:
    """``--threads N``: an integer from 1 to ``_MAX_THREADS`` (a usage error otherwise)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= n <= _MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {_MAX_THREADS}, got {n}")
    return n


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file, a saved .tsr graph, or a zoo model name")
    p.add_argument("--frontend", choices=("torch", "onnx"), default="torch",
                   help="import path for zoo models (default: torch)")


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="host",
                   help="target name (see `tessera targets`), 'host', or a .toml description (default: host)")
    p.add_argument("--threads", type=_threads, metavar="N",
                   help=f"worker threads, 1 to {_MAX_THREADS} (default: the CPUs available)")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``error: ...`` line (exit status 2), like every other CLI error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tessera", description="Tessera deep-learning compiler")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="show a model's ops, parameters, FLOPs, inputs and outputs")
    _add_model_args(p)
    p.add_argument("--graph", action="store_true", help="also print the graph IR as text")
    p.add_argument("--optimize", action="store_true", help="run the graph passes first")

    p = sub.add_parser("compile", help="compile a model for a CPU target into a single-file artifact (.tsa)")
    _add_model_args(p)
    p.add_argument("-o", "--output", metavar="OUT.tsa", help="artifact path (default: MODEL's stem + .tsa)")
    _add_target_args(p)
    p.add_argument("--shape", action="append", default=[], metavar="NAME=d1,d2,...",
                   help="static shape of an input (repeat per input); zoo models default to their example inputs")
    p.add_argument("--dim", action="append", default=[], metavar="SYMBOL=N",
                   help="size of a symbolic input dim, e.g. --dim batch=1 (repeat per symbol)")
    p.add_argument("--explain-fusion", action="store_true",
                   help="print why each producer->consumer edge was left unfused")
    p.add_argument("--dump", metavar="DIR",
                   help="write the generated C source and each kernel's loop IR and schedule into DIR "
                        "(NPU targets: each layer's program as assembly text)")
    p.add_argument("--report", action="store_true",
                   help="NPU targets: print per-layer cycles, MAC utilization, bound and the end-to-end totals")
    p.add_argument("--precision", choices=("auto", "int8", "bf16"), default="auto",
                   help="NPU targets: matrix precision (auto: bf16 where the description lists it, else int8)")
    p.add_argument("--calibration", action="append", default=[], metavar="NAME=FILE.npy",
                   help="NPU int8: one calibration input per model input (zoo models default to their examples)")

    p = sub.add_parser("run", help="compile and run a model (or run a saved .tsa artifact) on .npy inputs")
    p.add_argument("model", help="an .onnx file, a saved .tsr graph, a zoo model name, or a compiled .tsa artifact")
    p.add_argument("--frontend", choices=("torch", "onnx"), default="torch",
                   help="import path for zoo models (default: torch)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input tensor (repeat per input); zoo models default to their example inputs; "
                        "the compiled model is specialized to these shapes")
    p.add_argument("-o", "--output", metavar="OUT.npz", help="save outputs under the model's output names")
    p.add_argument("--reference", action="store_true", help="run the NumPy reference executor instead of compiling")
    _add_target_args(p)

    sub.add_parser("targets", help="list the built-in CPU targets and the one 'host' resolves to")

    p = sub.add_parser("export", help="export a zoo model to ONNX (dynamic batch/seq axes)")
    p.add_argument("name", help="zoo model name")
    p.add_argument("out", help="output .onnx path")

    p = sub.add_parser("zoo", help="import every zoo model through both frontends, run it (reference executor and "
                                   "compiled for the host) and compare with eager")
    p.add_argument("--models", help="comma-separated subset of the zoo")
    p.add_argument("--frontends", default="torch,onnx", help="comma-separated frontends (torch,onnx)")
    p.add_argument("--no-compile", action="store_true", help="reference executor only (skip compiling for the host)")

    p = sub.add_parser("tune", help="auto-tune a model's kernels for a target (records go to the tuning database, "
                                    "which compile then uses)")
    _add_model_args(p)
    p.add_argument("--target", default="host",
                   help="target name (see `tessera targets`), 'host', or a .toml description (default: host)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, metavar="M", help="tuning time budget in minutes")
    budget.add_argument("--trials", type=int, metavar="N", help="number of candidate schedules to measure")
    p.add_argument("--db", metavar="PATH", help="tuning database (default: $TESSERA_TUNING_DB or the cache dir)")
    p.add_argument("--seed", type=int, default=0, help="search seed (default: 0)")
    p.add_argument("--statistic", choices=("median", "min"), default="median",
                   help="statistic of a candidate's repeated runs (default: median; min resists other load)")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=d1,d2,...",
                   help="static shape of an input (repeat per input); zoo models default to their example inputs")
    p.add_argument("--dim", action="append", default=[], metavar="SYMBOL=N",
                   help="size of a symbolic input dim, e.g. --dim batch=1 (repeat per symbol)")

    p = sub.add_parser("tuning-db", help="share tuning records: export/import a JSON-lines file, or show a summary")
    p.add_argument("action", choices=("export", "import", "info"))
    p.add_argument("file", nargs="?", help="JSON-lines file to write (export) or read (import)")
    p.add_argument("--db", metavar="PATH", help="tuning database (default: $TESSERA_TUNING_DB or the cache dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (TesseraError, MemoryError, OSError, KeyboardInterrupt) as e:
        if args.debug:
            raise
        message, status = _describe_error(e)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message holds
        return status


def _describe_error(e: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for an error that ends a command."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(e, TesseraError):
        return str(e), 2
    if isinstance(e, MemoryError):  # safety net: the layers check sizes first (ResourceLimitError)
        return f"out of memory: {str(e) or 'a memory request failed'}", 2
    assert isinstance(e, OSError)  # safety net: a file the user named could not be read or written
    return os_error_message(e), 2


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
    console = Console(highlight=False)  # the repr highlighter is quadratic in a long name
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


def _load_inputs(specs: list[str], flag: str = "--input") -> dict[str, np.ndarray]:
    feeds = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise TesseraError(f"{flag} must be NAME=FILE.npy, got {spec!r}")
        if name in feeds:
            raise TesseraError(f"{flag} {name!r} given twice")
        feeds[name] = load_npy(name, file)
    return feeds


def _is_artifact(model: str) -> bool:
    return Path(model).suffix == ".tsa"


def _cmd_run(args: argparse.Namespace) -> int:
    from tessera.api import load_model

    if args.output:
        check_output_path(args.output, "outputs to")
    t0 = time.perf_counter()
    if _is_artifact(args.model):
        if args.reference:
            raise TesseraError(f"--reference needs a model, not a compiled artifact ({args.model})")
        if Path(args.model).is_dir():
            raise TesseraError(f"artifact {args.model} is a directory, not a .tsa file")
        from tessera.runtime.artifact import load_artifact

        cm = load_artifact(args.model, num_threads=args.threads)
        feeds = _load_inputs(args.input)
        if not feeds:
            names = ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}" for s in cm.input_specs)
            raise TesseraError(f"artifact {args.model} needs its inputs ({names}); pass --input NAME=FILE.npy")
        outs = cm.run_dict(feeds)
        print(f"ran {args.model} ({cm.manifest.target.name}) in {time.perf_counter() - t0:.3f} s")
    else:
        g = load_model(args.model, args.frontend)
        given: dict[str, np.ndarray] | list[np.ndarray] = _load_inputs(args.input)
        if not given and not Path(args.model).exists():
            from tessera.models import get_model

            given = [t.numpy() for t in get_model(args.model).example_inputs]
        if args.reference:
            from tessera.graph.reference import run_reference

            outs = run_reference(g, given)
        else:
            outs = _compile_and_run(g, given, args)
    for name, v in outs.items():
        stats = f" min {v.min():.6g} max {v.max():.6g}" if v.size else ""
        print(f"{name}: {v.dtype}{list(v.shape)}{stats}")
    if args.output:
        save_npz(args.output, outs)
        print(f"saved {len(outs)} output(s) to {args.output}")
    return 0


def _compile_and_run(g: Any, given: dict[str, np.ndarray] | list[np.ndarray],
                     args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Compile ``g`` specialized to the shapes of ``given`` (checked against the signature first)."""
    from tessera.compiler import compile as tessera_compile
    from tessera.graph.signature import bind_inputs

    feeds, _ = bind_inputs(g, given)
    cm = tessera_compile(g, args.target, {n: v.shape for n, v in feeds.items()}, num_threads=args.threads)
    print(f"compiled {g.name} for {cm.manifest.target.name}: {len(cm.compilation.kernels)} kernel(s) "
          f"in {cm.compile_seconds:.2f} s")
    return cm.run_dict(feeds)


_MAX_DIM = (1 << 63) - 1  # an int64 extent


def _parse_shapes(g: Any, shape_specs: list[str], dim_specs: list[str]) -> dict[str, Any]:
    """``--shape NAME=d1,d2`` and ``--dim SYM=N`` as a specialization mapping, checked against ``g``
    (each input's size too, against the machine's memory)."""
    shapes: dict[str, Any] = {}
    symbols = sorted({s for n in g.inputs for s in g.types[n].symbols})
    for spec in shape_specs:
        name, sep, dims = spec.partition("=")
        parts = [d.strip() for d in dims.split(",")] if dims.strip() else []
        if not sep or not name or not all(d.isascii() and d.isdigit() for d in parts):
            raise TesseraError(f"--shape must be NAME=d1,d2,... with non-negative integer dims, got {spec!r}")
        if name not in g.inputs:
            raise TesseraError(f"--shape {spec!r}: model has no input {name!r} (inputs: {', '.join(g.inputs)})")
        if name in shapes:
            raise TesseraError(f"--shape {name}=... given twice")
        shapes[name] = tuple(_dim(d, spec) for d in parts)
    for spec in dim_specs:
        name, sep, size = spec.partition("=")
        size = size.strip()
        if not sep or not name or not (size.isascii() and size.isdigit()):
            raise TesseraError(f"--dim must be SYMBOL=N with a non-negative integer N, got {spec!r}")
        if name not in symbols:
            known = ", ".join(symbols) if symbols else "none: all input dims are static"
            raise TesseraError(f"--dim {spec!r}: model has no symbolic dim {name!r} (symbols: {known})")
        shapes[name] = _dim(size, spec)
    _check_input_sizes(g, shapes)
    return shapes


def _dim(text: str, spec: str) -> int:
    n = int(text)
    if n > _MAX_DIM:
        raise TesseraError(f"{spec!r}: dim {n} is beyond the int64 range")
    return n


def _check_input_sizes(g: Any, shapes: dict[str, Any]) -> None:
    """Refuse (ResourceLimitError) an input whose size, given on the command line, could not be allocated
    on this machine (the compiler allocates each input once to check the shapes)."""
    from tessera.limits import check_allocation

    env = {k: v for k, v in shapes.items() if isinstance(v, int)}
    for name in g.inputs:
        t = g.types[name]
        if isinstance(shapes.get(name), tuple):
            dims: list[int] = list(shapes[name])
        elif t.symbols and t.symbols <= env.keys():  # static inputs are the model's, not the command line's
            try:
                dims = list(t.concrete(env))
            except (ArithmeticError, KeyError, ValueError):
                continue  # the compiler's shape checks report it
        else:
            continue
        numel = 1
        for d in dims:
            numel *= d
        check_allocation(numel * t.dtype.itemsize, f"input {name!r} of shape {dims}")


def _default_shapes(model: str, g: Any) -> dict[str, Any] | None:
    """Zoo models compile for their example inputs; files with symbolic dims need --shape/--dim."""
    from tessera.models import MODEL_NAMES

    if model in MODEL_NAMES and not Path(model).exists():
        from tessera.models import get_model

        example = get_model(model).example_inputs
        return {n: tuple(t.shape) for n, t in zip(g.inputs, example, strict=True)}
    symbols = sorted({s for n in g.inputs for s in g.types[n].symbols})
    if symbols:
        raise TesseraError(f"model {model} has symbolic input dims ({', '.join(symbols)}); give their sizes, "
                           f"e.g. {' '.join(f'--dim {s}=1' for s in symbols)}, or --shape NAME=d1,d2,...")
    return None


@dataclass
class _Built:
    """What save_artifact needs from a model, without loading the library (allows foreign targets)."""

    manifest: Any
    library_bytes: bytes
    weights: np.ndarray


def _cmd_compile(args: argparse.Namespace) -> int:
    from tessera.api import load_model
    from tessera.compiler import compile_graph
    from tessera.runtime.artifact import save_artifact
    from tessera.targets.npu_target import is_npu_target

    npu = is_npu_target(args.target)
    out = Path(args.output) if args.output else Path(Path(args.model).stem + ".tsa")
    if not npu:  # checked before any work; NPU programs are not saved as artifacts
        if out.suffix != ".tsa":
            raise TesseraError(f"artifact path must end in .tsa, got {out}")
        check_output_path(out, "the artifact")
    if args.dump:
        _check_dump_folder(Path(args.dump))
    g = load_model(args.model, args.frontend)
    shapes = _parse_shapes(g, args.shape, args.dim) or _default_shapes(args.model, g)
    if npu:
        return _cmd_compile_npu(args, g, shapes)
    explain: list[str] | None = [] if args.explain_fusion else None
    comp = compile_graph(g, args.target, shapes, explain_fusion=explain)
    if explain is not None:
        print(f"fusion: {len(explain)} edge(s) left unfused")
        for line in explain:
            print(f"  {line}")
    if args.dump:
        _dump(comp, Path(args.dump))
    try:
        library = comp.library.read_bytes()
    except OSError as e:
        raise TesseraError(f"cannot read the built library {comp.library}: {e}") from e
    save_artifact(_Built(comp.manifest, library, comp.weights), out)  # type: ignore[arg-type]
    mem = comp.manifest.memory
    saved = 1 - mem.peak_activation_bytes / mem.naive_activation_bytes if mem.naive_activation_bytes else 0.0
    print(f"compiled {g.name} for {comp.manifest.target.name}: {len(comp.kernels)} kernel(s) in {comp.seconds:.2f} s")
    print(f"activation memory: peak {format_bytes(mem.peak_activation_bytes)} vs naive sum "
          f"{format_bytes(mem.naive_activation_bytes)} ({saved:.0%} saved); "
          f"weights {format_bytes(comp.weights.nbytes)}")
    print(f"artifact: {out} ({format_bytes(out.stat().st_size)})")
    if args.dump:
        print(f"dumped C source, loop IR and schedules to {args.dump}")
    return 0


def _cmd_compile_npu(args: argparse.Namespace, g: Any, shapes: dict[str, Any] | None) -> int:
    """Compile for an NPU description; print the summary (and with --report the per-layer table)."""
    from tessera.compiler import compile as tessera_compile

    if args.output:
        raise TesseraError(f"NPU target {args.target}: programs are not saved as .tsa artifacts; "
                           "use --dump DIR for their assembly text")
    feeds = _load_inputs(args.calibration, "--calibration")
    calibration = [feeds] if feeds else None
    if calibration is None and not Path(args.model).exists():
        from tessera.models import MODEL_NAMES, get_model

        if args.model in MODEL_NAMES:
            calibration = [[t.numpy() for t in get_model(args.model).example_inputs]]
    cm = tessera_compile(g, args.target, shapes, precision=args.precision, calibration=calibration)
    rep = cm.report()
    print(f"compiled {g.name} for {rep.target} ({rep.precision}): {len(rep.layers)} NPU layer(s), "
          f"{rep.host_ops} host op(s) in {cm.compile_seconds:.2f} s")
    if args.report:
        print(rep.table())
    else:
        print(f"total cycles {rep.total_cycles:,}; MAC utilization {rep.matrix_utilization:.1%} over conv/matmul "
              f"time, {rep.end_to_end_utilization:.1%} end to end (--report for the per-layer table)")
    if args.dump:
        from tessera.npu import disassemble
        from tessera.utils import atomic_output

        folder = Path(args.dump)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TesseraError(f"cannot create dump folder {folder}: {e}") from e
        for tag, layer in cm.layers.items():
            with atomic_output(folder / f"{tag}.npu.s") as tmp:
                tmp.write_text(f"# {tag}: {layer.tiling}\n" + disassemble(layer.program))
        print(f"dumped {len(cm.layers)} layer program(s) to {folder}")
    return 0


def _check_dump_folder(folder: Path) -> None:
    """Refuse, before compiling, a ``--dump`` folder that is a file or lies under one."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise TesseraError(f"--dump {folder}: {existing} is a file, not a folder")


def _dump(comp: Any, folder: Path) -> None:
    """The generated C, and per kernel its loop IR and schedule, as text files in ``folder``."""
    from tessera.utils import atomic_output

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TesseraError(f"cannot create dump folder {folder}: {e}") from e
    files = {"model.c": comp.source}
    for ck in comp.kernels:
        name = ck.kernel.name
        files[f"{name}.loop.txt"] = str(ck.kernel) + "\n"
        lines = [f"# {name}: nodes {', '.join(n.name for n in ck.group.nodes)}; args {', '.join(ck.args)}"]
        for stage, steps in ck.schedules.items():
            lines.append(f"{stage}:")
            lines.extend(f"  {step}" for step in steps)
        files[f"{name}.schedule.txt"] = "\n".join(lines) + "\n"
    for fname, text in files.items():
        with atomic_output(folder / fname) as tmp:
            tmp.write_text(text)


def _cmd_targets(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tessera.targets import host_target, is_native, list_targets, load_target

    table = Table("target", "arch", "vector bits", "f32 lanes", "vector regs", "cores", "L1d", "L2", "L3",
                  "GHz", "peak GFLOP/s", "runs here", title="built-in CPU targets (peak: f32 FMA, all cores)")
    for name in list_targets():
        t = load_target(name)
        cores = str(t.cores) if t.cores else f"auto ({t.effective_cores()})"
        table.add_row(t.name, t.arch, str(t.vector_bits), str(t.lanes("f32")), str(t.vector_registers), cores,
                      format_bytes(t.caches.l1d), format_bytes(t.caches.l2),
                      format_bytes(t.caches.l3) if t.caches.l3 else "-", f"{t.frequency_ghz:g}",
                      f"{t.peak_gflops():.0f}", "yes" if is_native(t) else "no")
    console = Console(width=max(Console().width, 140))
    console.print(table)
    try:
        h = host_target()
    except TesseraError as e:
        print(f"host: no built-in target fits this machine ({e})")
        return 0
    print(f"host -> {h.name}: {h.effective_cores()} core(s), L1d {format_bytes(h.caches.l1d)}, "
          f"L2 {format_bytes(h.caches.l2)}, L3 {format_bytes(h.caches.l3) if h.caches.l3 else '-'}, "
          f"peak {h.peak_gflops():.0f} GFLOP/s")
    _print_npu_targets(console)
    return 0


def _print_npu_targets(console: Any) -> None:
    """The built-in NPU descriptions with their key figures (simulated: they compile anywhere)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from tessera.npu import list_descriptions, load_description

    rows = [load_description(n).summary() for n in list_descriptions()]
    if not rows:
        return
    cols = list(rows[0])
    table = Table(*cols, title="built-in NPU targets (run on the simulator)")
    for r in rows:
        table.add_row(*(escape(r.get(c, "")) for c in cols))
    Console(width=max(console.width, 200)).print(table)


def _cmd_export(args: argparse.Namespace) -> int:
    from tessera.models import MODEL_NAMES, get_model

    if args.name not in MODEL_NAMES:
        raise TesseraError(f"unknown zoo model {args.name!r} (zoo: {', '.join(MODEL_NAMES)})")
    check_output_path(args.out, "the ONNX model")
    get_model(args.name).export_onnx(Path(args.out))
    print(f"exported {args.name} to {args.out}")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from tessera.api import FRONTENDS
    from tessera.models import MODEL_NAMES
    from tessera.zoo_check import check_zoo

    models = args.models.split(",") if args.models else None
    unknown = [m for m in models or () if m not in MODEL_NAMES]
    if unknown:
        raise TesseraError(f"unknown zoo model(s) {', '.join(map(repr, unknown))} (zoo: {', '.join(MODEL_NAMES)})")
    frontends = args.frontends.split(",")
    bad = [f for f in frontends if f not in FRONTENDS]
    if bad:
        raise TesseraError(f"unknown frontend(s) {', '.join(map(repr, bad))} (choose from {', '.join(FRONTENDS)})")
    return 0 if check_zoo(models, frontends, compiled=not args.no_compile) else 1


def _cmd_tune(args: argparse.Namespace) -> int:
    from tessera.api import load_model
    from tessera.tune.command import check_budget, run_tune

    check_budget(args.minutes, args.trials)
    if args.minutes is not None and args.minutes == float("inf"):
        raise TesseraError("--minutes must be finite, got inf (use --trials N to bound the search by count)")
    g = load_model(args.model, args.frontend)
    shapes = _parse_shapes(g, args.shape, args.dim) or _default_shapes(args.model, g)
    return run_tune(g, shapes, args.target, minutes=args.minutes, trials=args.trials, db_path=args.db,
                    seed=args.seed, statistic=args.statistic)


def _cmd_tuning_db(args: argparse.Namespace) -> int:
    from tessera.tune.database import TuningDB, TuningDBError

    if args.action != "info" and not args.file:
        raise TuningDBError(f"tessera tuning-db {args.action} needs a FILE")
    if args.action == "export" and args.db and not Path(args.db).is_file():
        raise TuningDBError(f"tuning database {args.db} does not exist")
    if args.action == "export":
        check_output_path(args.file, "tuning records to")
    if args.action == "import" and Path(args.file).is_dir():
        raise TuningDBError(f"cannot read tuning records from {args.file}: it is a directory")
    with TuningDB(args.db, readonly=args.action == "export") as db:
        if args.action == "export":
            n = db.export_jsonl(args.file)
            print(f"exported {n} records from {db.path} to {args.file}")
        elif args.action == "import":
            before = db.count()
            try:
                n = db.import_jsonl(args.file)
            except UnicodeDecodeError as e:
                raise TuningDBError(f"cannot read tuning records from {args.file}: not UTF-8 text "
                                    f"(byte {e.start}: {e.reason})") from None
            print(f"read {n} records from {args.file}; {db.count() - before} new in {db.path}")
        else:
            recs = db.records()
            ok = sum(r.status == "ok" for r in recs)
            workloads = len({(r.workload, r.target) for r in recs})
            print(f"{db.path}: {len(recs)} records ({ok} ok, {len(recs) - ok} failed) for {workloads} "
                  f"workload/target pairs, {db.size_bytes() / 1024:.0f} KiB")
    return 0


_COMMANDS = {"inspect": _cmd_inspect, "compile": _cmd_compile, "run": _cmd_run, "targets": _cmd_targets,
             "export": _cmd_export, "zoo": _cmd_zoo, "tune": _cmd_tune,
             "tuning-db": _cmd_tuning_db}


if __name__ == "__main__":
    sys.exit(main())
