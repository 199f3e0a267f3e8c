"""What a fuzz case may end in: a clean error (a TesseraError with a one-line message) at some
stage, or outputs equal to the oracle's. Each check returns the list of problems (empty: fine)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, Phase, settings

from tests.fuzz.sandbox import Raised, Reply

# Reproducible in CI: a fixed example sequence, no example database written into the repository,
# no shrinking (each shrink step costs a sandbox round trip; the reported case is already small).
# Hangs are caught by the sandbox's timeout, so the deadline only bounds a slow but finished case.
FUZZ = settings(derandomize=True, database=None, deadline=timedelta(seconds=120), print_blob=False,
                phases=(Phase.explicit, Phase.generate), report_multiple_bugs=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

# Compiled float32 outputs vs the reference: per element, plus a share of the output's largest
# finite magnitude (sums of rounded products near zero). NaN must sit where the reference has NaN.
RTOL = 1e-4
# onnxruntime vs the reference (both NumPy-like float32, different summation orders)
RTOL_ORT = 1e-4


def died(reply: Reply) -> list[str]:
    if reply.died:
        return [f"{reply.died} in stage {reply.stage!r}; stderr tail:\n{reply.stderr[-1500:]}"]
    return []


def clean_errors(reply: Reply, stages: Iterable[str]) -> list[str]:
    """Every listed stage that raised must have raised a TesseraError with a one-line message."""
    problems = []
    for name in stages:
        r = reply.stages.get(name)
        if not isinstance(r, Raised):
            continue
        if not r.tessera:
            problems.append(f"stage {name!r} raised a non-Tessera error (a bug, not a clean error): {r}")
        elif not r.message.strip() or "\n" in r.message.strip() or "Traceback" in r.message:
            problems.append(f"stage {name!r}: the error message is not one line: {r.message[:500]!r}")
    return problems


def compare(got: Mapping[str, np.ndarray] | list[np.ndarray], want: Mapping[str, np.ndarray] | list[np.ndarray],
            what: str, rtol: float = RTOL) -> list[str]:
    """``got`` equals ``want`` output by output: same dtype and shape, floats within ``rtol`` (NaN
    where ``want`` has NaN, the same infinities), others exactly."""
    if isinstance(got, list) or isinstance(want, list):
        got_d = dict(enumerate(got.values() if isinstance(got, Mapping) else got))
        want_d = dict(enumerate(want.values() if isinstance(want, Mapping) else want))
    else:
        got_d, want_d = dict(got), dict(want)
    if set(got_d) != set(want_d):
        return [f"{what}: outputs {sorted(map(str, got_d))} != {sorted(map(str, want_d))}"]
    problems = []
    for name, ref in want_d.items():
        y = np.asarray(got_d[name])
        ref = np.asarray(ref)
        if y.dtype != ref.dtype or y.shape != ref.shape:
            problems.append(f"{what}: output {name!r} is {y.dtype}{list(y.shape)}, "
                            f"expected {ref.dtype}{list(ref.shape)}")
            continue
        if ref.dtype.kind in "fc":
            finite = np.isfinite(ref)
            scale = float(np.abs(ref[finite]).max()) if finite.any() else 0.0
            try:
                np.testing.assert_allclose(y, ref, rtol=rtol, atol=rtol * max(scale, 1e-30), equal_nan=True)
            except AssertionError as e:
                problems.append(f"{what}: output {name!r} differs:\n{_short(e)}")
        elif not np.array_equal(y, ref):
            problems.append(f"{what}: output {name!r} differs: got {_arr(y)}, expected {_arr(ref)}")
    return problems


def _short(e: AssertionError) -> str:
    return "\n".join(str(e).strip().splitlines()[:12])


def _arr(a: np.ndarray) -> str:
    return np.array2string(a.ravel()[:16], threshold=16)
