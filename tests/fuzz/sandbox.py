"""A persistent child process that runs fuzz cases, so that a crash or a hang in one case fails
that case instead of killing pytest.

The parent (:class:`Sandbox`) sends ``(handler, kwargs)`` pickles over the child's stdin and reads
one pickled reply per request. The child runs each stage of a case (import, reference, compile,
load, run...) and reports per stage either ``"ok"`` or what was raised; the tests judge the reply.
A child that dies (a signal, ``abort``) or does not answer within the timeout is reported as a
``crash``/``hang`` with the stage it was in and the tail of its stderr, and is restarted for the
next case. Run as ``python -m tests.fuzz.sandbox`` (the child side).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
_HEADER = struct.Struct("<Q")
MAX_FEED_BYTES = 16 << 20  # inputs larger than this are not generated (the case stops after import)
CHILD_MEMORY_LIMIT = 2 << 30  # TESSERA_MEMORY_LIMIT in the child: check_allocation refuses more
CHILD_ADDRESS_SPACE = 12 << 30  # RLIMIT_AS: an unchecked huge allocation fails instead of swapping the machine


# ---- what a case reports ---------------------------------------------------------------------


@dataclass
class Raised:
    """An exception a stage raised."""

    type: str
    module: str
    tessera: bool  # a TesseraError subclass: a clean, user-facing error
    message: str
    tail: str  # the traceback's last lines

    def __str__(self) -> str:
        return f"{self.module}.{self.type}: {self.message[:300]!r}\n{self.tail}"


@dataclass
class Reply:
    """One case's outcome: ``stages`` maps a stage name to ``"ok"`` or :class:`Raised`; ``values``
    holds what the stages produced (outputs by name). ``died`` is set when the child crashed
    (``"crash"``) or hung (``"hang"``) in stage ``stage``; ``stderr`` is its stderr's tail."""

    stages: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    died: str = ""
    stage: str = ""
    stderr: str = ""


# ---- parent side ------------------------------------------------------------------------------


class Sandbox:
    """The parent's handle on the child process (started on first use, restarted after a death)."""

    def __init__(self, workdir: Path, timeout: float = 60.0) -> None:
        self.workdir = workdir
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "sandbox-stderr.log"
        self.deaths = 0

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            TESSERA_CACHE_DIR=str(self.workdir / "cache"),
            TESSERA_TUNING_DB=str(self.workdir / "no-default.db"),  # never created: no tuning by default
            TESSERA_MEMORY_LIMIT=str(CHILD_MEMORY_LIMIT),
            PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
            PYTHONFAULTHANDLER="1",
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it from here)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.sandbox"], cwd=self.workdir, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        log.close()
        return self.proc

    def call(self, handler: str, timeout: float | None = None, **kwargs: Any) -> Reply:
        """Run ``handler(**kwargs)`` in the child; a crash or a hang becomes a Reply with ``died`` set."""
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        assert proc.stdin is not None and proc.stdout is not None
        mark = self.log_path.stat().st_size
        data = pickle.dumps((handler, kwargs))
        try:
            proc.stdin.write(_HEADER.pack(len(data)) + data)
            proc.stdin.flush()
            reply = self._read(proc, timeout or self.timeout)
        except (BrokenPipeError, EOFError):
            reply = None
        if isinstance(reply, Reply):
            return reply
        died = "hang" if reply == "hang" else "crash"
        self.close()
        self.deaths += 1
        text = self.log_path.read_bytes()[mark:].decode(errors="replace")
        stages = [line[len("[stage] "):] for line in text.splitlines() if line.startswith("[stage] ")]
        rc = proc.returncode
        signame = signal.Signals(-rc).name if rc is not None and rc < 0 and -rc in signal.valid_signals() else rc
        return Reply(died=f"{died} (exit {signame})", stage=stages[-1] if stages else "?", stderr=text[-3000:])

    def _read(self, proc: subprocess.Popen[bytes], timeout: float) -> Reply | str | None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return "hang"
        head = proc.stdout.read(_HEADER.size)
        if len(head) < _HEADER.size:
            proc.wait(timeout=10)
            return None
        (n,) = _HEADER.unpack(head)
        body = proc.stdout.read(n)
        if len(body) < n:
            proc.wait(timeout=10)
            return None
        return pickle.loads(body)

    def close(self) -> None:
        """End the child (and anything it started, e.g. a C compiler)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


# ---- child side -------------------------------------------------------------------------------


def _raised(e: BaseException) -> Raised:
    from tessera.errors import TesseraError

    tail = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-4:])
    return Raised(type(e).__name__, type(e).__module__, isinstance(e, TesseraError), str(e), tail[-1500:])


class _Case:
    """Runs the stages of one case, recording each stage's outcome in a Reply."""

    def __init__(self) -> None:
        self.reply = Reply()

    def stage(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        print(f"[stage] {name}", file=sys.stderr, flush=True)
        try:
            value = fn(*args, **kwargs)
        except Exception as e:  # reported to the parent, which fails the case unless it is a TesseraError
            self.reply.stages[name] = _raised(e)
            return False, None
        self.reply.stages[name] = "ok"
        return True, value


def feeds_for(g: Any, seed: int, special: bool) -> dict[str, np.ndarray] | None:
    """Random inputs for graph ``g`` (symbolic dims: 2); None when they would be too large.
    ``special``: some float entries become NaN, +-inf, +-0 and denormals."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in g.inputs:
        t = g.types[name]
        shape = tuple(d if isinstance(d, int) else 2 for d in t.shape)
        dt = t.dtype.np
        # zero-size dims count as 1: NumPy refuses shapes like (0, 2**62) too
        if math.prod(max(d, 1) for d in shape) * dt.itemsize > MAX_FEED_BYTES:
            return None
        if dt.kind == "f":
            x = rng.standard_normal(shape).astype(dt)
            if special and x.size:
                fi = np.finfo(dt)
                # no finite extremes: whether max + max - max overflows depends on the summation order
                pool = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, fi.tiny / 4, -fi.tiny / 4], dtype=dt)
                mask = rng.random(shape) < 0.3
                x[mask] = rng.choice(pool, size=int(mask.sum()))
        elif dt.kind == "b":
            x = rng.random(shape) < 0.5
        else:
            x = rng.integers(0, 3, shape).astype(dt)
        feeds[name] = x
    return feeds


def h_onnx(payload: bytes, seed: int, special: bool, compile: bool, ort: bool) -> Reply:
    """Import the model bytes, run the reference on random inputs, optionally onnxruntime and the
    compiled model on the same inputs."""
    from tessera.frontend.onnx_importer import import_onnx
    from tessera.graph.reference import run_reference

    case = _Case()
    ok, g = case.stage("import", import_onnx, payload)
    if not ok:
        return case.reply
    feeds = feeds_for(g, seed, special)
    if feeds is None:
        case.reply.values["skipped"] = "inputs too large to generate"
        return case.reply
    case.reply.values["feeds"] = feeds
    ok, ref = case.stage("reference", run_reference, g, feeds)
    if ok:
        case.reply.values["reference"] = ref
    if ort:
        ok_ort, got = case.stage("onnxruntime", _run_ort, payload, feeds)
        if ok_ort:
            case.reply.values["onnxruntime"] = got
    if compile:  # also where the reference refused: the compiled model must refuse too
        import tessera

        shapes = {k: v.shape for k, v in feeds.items()}
        ok, cm = case.stage("compile", tessera.compile, g, input_shapes=shapes)
        if ok:
            ok, outs = case.stage("run", cm, *[feeds[k] for k in g.inputs])
            if ok:
                case.reply.values["compiled"] = dict(zip(g.outputs, outs, strict=False))
    return case.reply


def _run_ort(payload: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(payload, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return dict(zip(names, sess.run(None, {k: v for k, v in feeds.items() if k in wanted}), strict=True))


def h_artifact(path: str, inputs: list[np.ndarray]) -> Reply:
    """Load an artifact file and run it on ``inputs``."""
    from tessera.runtime.artifact import load_artifact

    case = _Case()
    ok, cm = case.stage("load", load_artifact, path)
    if ok:
        ok, outs = case.stage("run", cm, *inputs)
        if ok:
            case.reply.values["outputs"] = [np.array(o) for o in outs]
    return case.reply


def h_build_artifact(payload: bytes, path: str) -> Reply:
    """Compile an ONNX model for the host and save it as an artifact (a fixture, not a case)."""
    import tessera
    from tessera.frontend.onnx_importer import import_onnx
    from tessera.runtime.artifact import save_artifact

    case = _Case()
    ok, cm = case.stage("compile", tessera.compile, import_onnx(payload))
    if ok:
        case.stage("save", save_artifact, cm, path)
    return case.reply


class _FakeMeasurer:
    """Renders candidates but never builds or runs them: a candidate's time is a hash of its C
    source, so the records are real traces of the knob space with made-up, deterministic times."""

    def __init__(self) -> None:
        self._source: dict[int, str] = {}

    def build(self, jobs: Any) -> list[Any]:
        out = []
        for job in jobs:
            source, built = job()
            self._source[id(built)] = source
            out.append(built)
        return out

    def run(self, built: Any, reference: Any) -> Any:
        import hashlib

        from tessera.tune.measure import MeasureResult

        h = int(hashlib.sha256(self._source[id(built)].encode()).hexdigest()[:8], 16)
        return MeasureResult("ok", 1e-3 * (1 + h / 2**32))

    def close(self) -> None:
        pass


def h_make_records(payload: bytes, db: str, out: str, trials: int) -> Reply:
    """Tuning records for the host from a short search over an ONNX model's kernels, exported to ``out``."""
    from tessera.frontend.onnx_importer import import_onnx
    from tessera.targets import load_target
    from tessera.tune.database import TuningDB
    from tessera.tune.tasks import extract_tasks
    from tessera.tune.tuner import tune

    case = _Case()
    g = import_onnx(payload)
    target = load_target("host")

    def make() -> int:
        with TuningDB(db) as d:
            tune(extract_tasks(g), target, d, trials=trials, seed=0, batch_size=4, measurer=_FakeMeasurer())
            return d.export_jsonl(out)

    case.stage("records", make)
    return case.reply


def h_tuning(records: str, db: str, model: bytes | None, seed: int, via_cli: bool) -> Reply:
    """Import a JSON-lines file into a fresh database (API or CLI); then, with ``model``, compile it
    with that database and run it beside the reference."""
    case = _Case()
    if via_cli:
        ok, rc = case.stage("import", _cli, ["tuning-db", "import", records, "--db", db])
        if not ok:
            return case.reply
        case.reply.values["cli"] = rc
        if rc[0] != 0:
            return case.reply
    else:
        from tessera.tune.database import TuningDB

        def imp() -> int:
            with TuningDB(db) as d:
                return d.import_jsonl(records)

        ok, _ = case.stage("import", imp)
        if not ok:
            return case.reply
    if model is None:
        return case.reply
    import logging

    import tessera
    from tessera.frontend.onnx_importer import import_onnx
    from tessera.graph.reference import run_reference

    g = import_onnx(model)
    feeds = feeds_for(g, seed, special=False)
    assert feeds is not None
    case.reply.values["reference"] = run_reference(g, feeds)
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger("tessera").addHandler(handler)
    try:
        ok, cm = case.stage("compile", tessera.compile, g, input_shapes={k: v.shape for k, v in feeds.items()},
                            tuning=db)
    finally:
        logging.getLogger("tessera").removeHandler(handler)
    case.reply.values["log"] = log.getvalue()
    if ok:
        ok, outs = case.stage("run", cm, *[feeds[k] for k in g.inputs])
        if ok:
            case.reply.values["compiled"] = dict(zip(g.outputs, outs, strict=False))
    return case.reply


def _cli(argv: list[str]) -> tuple[int, str]:
    """``tessera <argv>`` in this process: exit status and what it printed on stderr."""
    from tessera.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = e.code if isinstance(e.code, int) else 2
    return rc, err.getvalue()


HANDLERS: dict[str, Callable[..., Reply]] = {"onnx": h_onnx, "artifact": h_artifact, "build_artifact": h_build_artifact,
                                             "make_records": h_make_records,
                                             "tuning": h_tuning}


def _child() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the replies
    sys.stdout = sys.stderr
    src = sys.stdin.buffer
    tempfile.tempdir = os.getcwd()
    while True:
        head = src.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return
        (n,) = _HEADER.unpack(head)
        handler, kwargs = pickle.loads(src.read(n))
        reply = HANDLERS[handler](**kwargs)
        data = pickle.dumps(reply)
        out.write(_HEADER.pack(len(data)) + data)
        out.flush()


if __name__ == "__main__":
    from tests.fuzz.sandbox import _child as run  # the importable module's classes, so replies unpickle

    run()
