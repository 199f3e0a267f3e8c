"""Conformance summary: pass / fail / expected-failure counts per execution mode for node
and model tests."""

from __future__ import annotations

from collections import Counter

import pytest

_COUNTS: dict[tuple[str, str], Counter[str]] = {}
_XPASSED: list[str] = []


def _category(nodeid: str) -> tuple[str, str] | None:
    """(``node``|``model``, mode) of a conformance test id such as ``test_node[compiled-test_add]``."""
    for cat in ("node", "model"):
        prefix = f"test_onnx_backend.py::test_{cat}["
        if prefix in nodeid:
            param = nodeid.split(prefix, 1)[1]
            return cat, param.split("-", 1)[0]
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    key = _category(report.nodeid)
    if key is None:
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
        _COUNTS.setdefault(key, Counter())[outcome] += 1
        if outcome == "unexpectedly passed":
            _XPASSED.append(report.nodeid.split("[", 1)[1].rstrip("]"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not any(_COUNTS.values()):
        return
    tr = terminalreporter
    tr.section("ONNX conformance summary")
    order = ("passed", "failed", "expected failure", "unexpectedly passed", "skipped")
    for cat, mode in sorted(_COUNTS, key=lambda k: (k[0] != "node", k[1] != "reference", k[1])):
        counts = _COUNTS[(cat, mode)]
        parts = ", ".join(f"{counts[k]} {k}" for k in order if counts[k])
        tr.write_line(f"{cat} tests, {mode} mode: {sum(counts.values())} run: {parts}")
    if _XPASSED:
        tr.write_line("listed as expected failures but passed (update expected_failures*.py): "
                      + ", ".join(sorted(_XPASSED)))
