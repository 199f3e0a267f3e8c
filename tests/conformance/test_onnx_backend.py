"""ONNX's backend test suite (node tests and shipped model tests) run through Tessera.

Every case must pass unless listed in ``expected_failures.py``; a listed case that passes
fails the run (strict xfail) so the list stays honest. Outputs are compared with ONNX's own
runner comparison (same shape and dtype, values within the case's rtol/atol)."""

from __future__ import annotations

import pytest
from onnx.backend.test.runner import Runner

from tessera.onnx_backend import TesseraBackend
from tests.conformance.cases import Case, load_data_sets, model_cases, node_cases
from tests.conformance.expected_failures import expected_failure


def _params(cases: list[Case]) -> list[object]:
    out = []
    for case in cases:
        marks = []
        reason = expected_failure(case)
        if reason:
            marks.append(pytest.mark.xfail(reason=reason, strict=True))
        if case.kind == "light":  # full-size CNNs (224x224) on the NumPy reference executor
            marks.append(pytest.mark.slow)
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def _run_case(case: Case) -> None:
    rep = TesseraBackend.prepare(case.model, "CPU")
    data = load_data_sets(case)
    assert data, f"{case.id}: no test data"
    for inputs, expected in data:
        outputs = rep.run(inputs)
        Runner.assert_similar_outputs(expected, list(outputs), rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("case", _params(node_cases()))
def test_node(case: Case) -> None:
    _run_case(case)


@pytest.mark.parametrize("case", _params(model_cases()))
def test_model(case: Case) -> None:
    _run_case(case)
