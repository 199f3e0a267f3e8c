"""ONNX conformance cases the *compiled* mode is expected to fail, beyond the reference list.

The compiled mode imports the model as the reference mode does, then compiles it with
``tessera.compiler.compile`` for the shapes of the test inputs; there is no fallback to the
reference executor for the whole model, only per operator (``tessera.segmented``: operators the
compiler cannot compile statically run on the host between compiled segments), so anything else
the compiler rejects fails. ``expected_failures.py`` applies to both modes; this list adds the
compiler's own limits, each group with its reason. Like that list it is strict: a listed case
that passes fails the run.

Each listed case must fail by raising ``CompileError`` (``RAISES`` names the exceptions of
groups that fail otherwise): a listed case that compiles but computes a wrong result, or fails
some other way, is reported as a failure. Compiler *bugs* (wrong results where the reference
mode passes) are not listed here: they fail the run until fixed.
"""

from __future__ import annotations

from tessera.errors import CompileError

# reason -> case ids (node test names; model tests as "<kind>/<name>")
CASES: dict[str, tuple[str, ...]] = {
    # Empty: operators the compiler cannot compile statically (data-dependent output shapes such as
    # NonZero/Unique/Compress, Dropout in training mode) run on the host between compiled segments
    # (tessera.segmented).
}

# reason -> the exception its cases raise, where it is not CompileError
RAISES: dict[str, type[BaseException]] = {}

_CASE_REASON = {case_id: reason for reason, ids in CASES.items() for case_id in ids}


def compiled_expected_failure(case: object) -> tuple[str, type[BaseException]] | None:
    """Why ``case`` (a tests.conformance.cases.Case) is expected to fail in compiled mode only,
    and the exception it must raise; None if it is not listed (the reference list, which applies
    to both modes, is checked separately)."""
    reason = _CASE_REASON.get(case.id)  # type: ignore[attr-defined]
    return None if reason is None else (reason, RAISES.get(reason, CompileError))
