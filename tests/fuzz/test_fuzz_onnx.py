"""Fuzz: malformed ONNX models (mutated small valid models) must give a clean error or the reference's
answer, never a crash, a hang or a traceback. Compiled runs are compared with the reference;
the reference with onnxruntime where both accept the model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import example, given, settings

from tests.fuzz.judge import FUZZ, RTOL_ORT, clean_errors, compare, died
from tests.fuzz.onnx_cases import BASES, COMPILABLE, KNOWN_CASES, OnnxCase, onnx_cases
from tests.fuzz.sandbox import Raised, Reply, Sandbox

MAX_OPSET = onnx.defs.onnx_opset_version()
# onnxruntime's words for "this attribute value is invalid for these shapes"
ORT_INVALID = ("ShapeInferenceError", "TypeInferenceError", "Invalid attribute")
IMPORT_EXAMPLES = 250
COMPILE_EXAMPLES = 30


def problems_of(case: OnnxCase, reply: Reply) -> list[str]:
    problems = died(reply) + clean_errors(reply, ("import", "reference", "compile", "run"))
    values = reply.values
    if "reference" in values and "onnxruntime" in values and not case.special:
        problems += compare(values["reference"], values["onnxruntime"], "reference vs onnxruntime", RTOL_ORT)
    if "compiled" in values and "reference" in values:
        problems += compare(values["compiled"], values["reference"], "compiled vs reference")
    elif "compiled" in values:
        problems.append(f"the compiled model ran where the reference refused ({reply.stages['reference']}); "
                        f"it returned {summary(values['compiled'])}")
    ort = reply.stages.get("onnxruntime")
    if case.strict and reply.stages.get("reference") == "ok" and isinstance(ort, Raised) and any(
            k in ort.message for k in ORT_INVALID):
        problems.append(f"accepted an attribute onnxruntime rejects as invalid ({ort.message[:300]})")
    version = opset_version(case.payload)
    if version is not None and not 1 <= version <= MAX_OPSET and reply.stages.get("import") == "ok":
        problems.append(f"imported a model with default-domain opset {version} (ONNX defines 1..{MAX_OPSET})")
    return problems


def opset_version(payload: bytes) -> int | None:
    """The default-domain opset the payload declares, None if it does not parse or declares none."""
    try:
        m = onnx.load_model_from_string(payload)
    except Exception:  # noqa: BLE001 (corrupted bytes: the importer's verdict is what the test checks)
        return None
    versions = [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")]
    return versions[0] if versions else None


def summary(outs: dict[str, np.ndarray]) -> str:
    return "; ".join(f"{k}: {v.dtype}{list(v.shape)} {np.array2string(v.ravel()[:6], threshold=6)}"
                     for k, v in outs.items())


def run_case(sandbox: Sandbox, case: OnnxCase, compile: bool) -> None:
    reply = sandbox.call("onnx", payload=case.payload, seed=case.seed, special=case.special, compile=compile,
                         ort=True)
    problems = problems_of(case, reply)
    assert not problems, f"{case!r}:\n" + "\n".join(problems)


@pytest.mark.parametrize("base", sorted(BASES))
def test_unmodified_bases_match(sandbox: Sandbox, base: str) -> None:
    """The starting points are valid: they import, and reference, onnxruntime and compiled agree."""
    from tests.fuzz.onnx_cases import OnnxCase

    case = OnnxCase(base, [], BASES[base]().SerializeToString(), special=False, seed=0)
    reply = sandbox.call("onnx", payload=case.payload, seed=0, special=False, compile=True, ort=True)
    assert all(v == "ok" for v in reply.stages.values()), reply.stages
    assert set(reply.stages) == {"import", "reference", "onnxruntime", "compile", "run"}
    assert not problems_of(case, reply)


@settings(FUZZ, max_examples=IMPORT_EXAMPLES)
@given(case=onnx_cases())
def test_malformed_onnx_import_and_reference(sandbox: Sandbox, case: OnnxCase) -> None:
    run_case(sandbox, case, compile=False)


def with_known_cases(test):  # noqa: ANN001, ANN201
    for case in KNOWN_CASES:
        test = example(case=case)(test)
    return test


@pytest.mark.slow
@settings(FUZZ, max_examples=COMPILE_EXAMPLES)
@with_known_cases
@given(case=onnx_cases(mutations=COMPILABLE, max_steps=1, bytes_share=0.0))
def test_malformed_onnx_compiled(sandbox: Sandbox, case: OnnxCase) -> None:
    run_case(sandbox, case, compile=True)
