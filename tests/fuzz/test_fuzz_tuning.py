"""Fuzz: malformed tuning records (a real export, edited) must give a clean error on import (API
and ``tessera tuning-db import``), or import so that a compile using them gives the reference's
answer (a bad record ignored with a warning), never a crash, a hang or a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from tests.fuzz.judge import FUZZ, clean_errors, compare, died
from tests.fuzz.sandbox import Reply, Sandbox
from tests.fuzz.tuning_cases import TuningCase, tuning_cases

IMPORT_EXAMPLES = 120
COMPILE_EXAMPLES = 20


def tuning_model() -> bytes:
    """MatMul+Relu, 30x64 @ 64x40: 40 columns pad to 48, so records pack the weight panel."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 40)).astype(np.float32), "w")
    g = oh.make_graph([oh.make_node("MatMul", ["x", "w"], ["m"], name="mm"), oh.make_node("Relu", ["m"], ["y"])],
                      "tuned", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [30, 64])],
                      [oh.make_tensor_value_info("y", TensorProto.FLOAT, [30, 40])], [w])
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)], ir_version=8).SerializeToString()


@dataclass
class Exported:
    text: str
    dir: Path


@pytest.fixture(scope="module")
def exported(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    tmp = tmp_path_factory.mktemp("tuning")
    reply = sandbox.call("make_records", payload=tuning_model(), db=str(tmp / "made.db"), out=str(tmp / "made.jsonl"),
                         trials=6)
    assert reply.stages == {"records": "ok"}, reply
    return Exported((tmp / "made.jsonl").read_text(), tmp)


def problems_of(reply: Reply) -> list[str]:
    problems = died(reply) + clean_errors(reply, ("import", "compile", "run"))
    cli = reply.values.get("cli")
    if cli is not None:
        rc, err = cli
        lines = err.strip().splitlines()
        if rc not in (0, 2):
            problems.append(f"tessera tuning-db import exited {rc}: {err[-1500:]}")
        elif rc == 2 and (len(lines) != 1 or not lines[0].startswith("error: ")):
            problems.append(f"tessera tuning-db import: exit 2 but not one 'error:' line: {err[-1500:]!r}")
    if "compiled" in reply.values:
        problems += compare(reply.values["compiled"], reply.values["reference"], "compiled with the records")
    return problems


def check(sandbox: Sandbox, case: TuningCase, tmp: Path, compile: bool) -> None:
    records, db = tmp / "case.jsonl", tmp / "case.db"
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        p.unlink(missing_ok=True)
    records.write_text(case.text)
    reply = sandbox.call("tuning", records=str(records), db=str(db), model=tuning_model() if compile else None, seed=0,
                         via_cli=case.via_cli)
    problems = problems_of(reply)
    assert not problems, f"{case!r}:\n" + "\n".join(problems)


def test_unmodified_records_import_and_compile(sandbox: Sandbox, exported: Exported) -> None:
    """The starting point: the export imports, and a compile replaying its best record matches the reference."""
    case = TuningCase(["unmodified"], exported.text, via_cli=True)
    records, db = exported.dir / "plain.jsonl", exported.dir / "plain.db"
    records.write_text(case.text)
    reply = sandbox.call("tuning", records=str(records), db=str(db), model=tuning_model(), seed=0, via_cli=True)
    assert reply.stages == {"import": "ok", "compile": "ok", "run": "ok"}, reply
    assert reply.values["cli"][0] == 0
    assert not problems_of(reply)


def test_malformed_records_import(sandbox: Sandbox, exported: Exported) -> None:
    @settings(FUZZ, max_examples=IMPORT_EXAMPLES)
    @given(case=tuning_cases(exported.text))
    def run(case: TuningCase) -> None:
        check(sandbox, case, exported.dir, compile=False)

    run()


@pytest.mark.slow
def test_malformed_records_compiled(sandbox: Sandbox, exported: Exported) -> None:
    @settings(FUZZ, max_examples=COMPILE_EXAMPLES)
    @given(case=tuning_cases(exported.text, lines_share=0.0))
    def run(case: TuningCase) -> None:
        check(sandbox, case, exported.dir, compile=True)

    run()
