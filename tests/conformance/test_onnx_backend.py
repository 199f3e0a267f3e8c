"""ONNX's backend test suite (node tests and shipped model tests) run through Tessera in
every execution mode: the NumPy reference executor and the CPU compiler.

Every case must pass unless listed in ``expected_failures.py`` (both modes) or, for the
compiled mode, ``expected_failures_compiled.py`` (whose cases must fail with the listed
exception, CompileError by default); a listed case that passes fails the run (strict xfail)
so the lists stay honest. Outputs are compared with ONNX's own runner
comparison (same shape and dtype, values within the case's rtol/atol)."""

from __future__ import annotations

import pytest
from onnx.backend.test.runner import Runner

from tessera.onnx_backend import MODES, TesseraBackend
from tests.conformance.cases import Case, load_data_sets, model_cases, node_cases
from tests.conformance.expected_failures import expected_failure
from tests.conformance.expected_failures_compiled import compiled_expected_failure


def _params(cases: list[Case]) -> list[object]:
    out = []
    for mode in MODES:
        for case in cases:
            marks = []
            reason = expected_failure(case)
            compiled_only = compiled_expected_failure(case) if mode == "compiled" and reason is None else None
            if reason:
                marks.append(pytest.mark.xfail(reason=reason, strict=True))
            elif compiled_only:
                marks.append(pytest.mark.xfail(reason=compiled_only[0], raises=compiled_only[1], strict=True))
            # Full-size CNNs (224x224): slow on the NumPy executor, and a gcc -O3 build of a
            # whole network when compiled. Compiled node tests build one library per case.
            if case.kind == "light" or (mode == "compiled" and case.kind == "node"):
                marks.append(pytest.mark.slow)
            out.append(pytest.param(case, mode, id=f"{mode}-{case.id}", marks=marks))
    return out


def _run_case(case: Case, mode: str) -> None:
    rep = TesseraBackend.prepare(case.model, "CPU", mode=mode)
    data = load_data_sets(case)
    assert data, f"{case.id}: no test data"
    for inputs, expected in data:
        outputs = rep.run(inputs)
        Runner.assert_similar_outputs(expected, list(outputs), rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize(("case", "mode"), _params(node_cases()))
def test_node(case: Case, mode: str) -> None:
    _run_case(case, mode)


@pytest.mark.parametrize(("case", "mode"), _params(model_cases()))
def test_model(case: Case, mode: str) -> None:
    _run_case(case, mode)
