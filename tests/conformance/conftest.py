"""Conformance summary: pass / fail / expected-failure counts for node and model tests."""

from __future__ import annotations

from collections import Counter

import pytest

_COUNTS: dict[str, Counter[str]] = {"node": Counter(), "model": Counter()}
_XPASSED: list[str] = []


def _category(nodeid: str) -> str | None:
    if "test_onnx_backend.py::test_node[" in nodeid:
        return "node"
    if "test_onnx_backend.py::test_model[" in nodeid:
        return "model"
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    cat = _category(report.nodeid)
    if cat is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            outcome = "expected failure" if report.skipped else "unexpectedly passed"
        elif report.failed and "XPASS(strict)" in str(report.longrepr):
            outcome = "unexpectedly passed"
        else:
            outcome = report.outcome
        if report.when == "setup" and report.skipped and outcome == "skipped":
            outcome = "skipped"
        _COUNTS[cat][outcome] += 1
        if outcome == "unexpectedly passed":
            _XPASSED.append(report.nodeid.split("[", 1)[1].rstrip("]"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not any(_COUNTS.values()):
        return
    tr = terminalreporter
    tr.section("ONNX conformance summary")
    order = ("passed", "failed", "expected failure", "unexpectedly passed", "skipped")
    for cat, counts in _COUNTS.items():
        if counts:
            parts = ", ".join(f"{counts[k]} {k}" for k in order if counts[k])
            tr.write_line(f"{cat} tests: {sum(counts.values())} run: {parts}")
    if _XPASSED:
        tr.write_line("listed as expected failures but passed (update expected_failures.py): "
                      + ", ".join(sorted(_XPASSED)))
