"""Generated malformed tuning records: a real ``tessera tuning-db export`` file, edited.

The edited record is made the fastest ``ok`` record of its kernel (unless the edit is to its time
or status), so a compile with the imported database replays it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

SECONDS = [float("-inf"), float("nan"), float("inf"), 0.0, -1.0, -1e-9, 1e-300, 1e308, "fast", None, [], True]
STEP_INTS = [0, -1, 1, 2, 3, 5, 7, 16, 1000, 2**31, 2**63 - 1, -(2**63)]
VALUES: list[Any] = [None, True, 0, -1, 2**63, 1.5, "", "x", "ok", [], {}, [[]], [[["bogus"]]], {"a": [1]}]


@dataclass
class TuningCase:
    steps: list[str]
    text: str  # the JSON-lines file
    via_cli: bool

    def __repr__(self) -> str:
        return f"TuningCase({'; '.join(self.steps)}; via_cli={self.via_cli})"


def _leaves(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k in sorted(obj):
            out += _leaves(obj[k], (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _leaves(v, (*prefix, i))
    return out


def _edit_step(rec: dict[str, Any], draw: Any) -> str:
    stages = rec.get("steps")
    if not isinstance(stages, list) or not stages or not all(isinstance(x, list) and x for x in stages):
        return "steps: (not editable after an earlier edit)"
    s = draw(st.integers(0, len(stages) - 1))
    steps = stages[s]
    k = draw(st.integers(0, len(steps) - 1))
    step = steps[k]
    if not isinstance(step, list):
        return f"stage {s} step {k}: (not a list after an earlier edit)"
    how = draw(st.sampled_from(["arg", "arg", "arg", "name", "drop", "duplicate", "unknown", "truncate", "swap"]))
    if how == "arg" and len(step) > 1:
        i = draw(st.integers(1, len(step) - 1))
        step[i] = draw(st.sampled_from(STEP_INTS if isinstance(step[i], int) else ["nope", "", "x0", "x1_o", 3]))
    elif how == "name" and len(step) > 1:
        step[1] = draw(st.sampled_from(["x9", "", "x0_i_i_i", 0]))
    elif how == "drop":
        del steps[k]
    elif how == "duplicate":
        steps.insert(k, list(step))
    elif how == "unknown":
        bad = [["bogus", "x0", 4], [], ["split"], "split", None, ["pack", 9, "x9", 1, 1]]
        steps.insert(k, draw(st.sampled_from(bad)))
    elif how == "truncate":
        steps[k] = step[: draw(st.integers(0, max(len(step) - 1, 0)))]
    elif how == "swap" and k + 1 < len(steps):
        steps[k], steps[k + 1] = steps[k + 1], steps[k]
    return f"stage {s} step {k} {how}: {json.dumps(steps[k] if k < len(steps) else None)}"


def _edit_field(rec: dict[str, Any], draw: Any, others: list[dict[str, Any]]) -> str:
    what = draw(st.sampled_from(["seconds", "status", "workload", "target", "config", "steps", "leaf", "drop",
                                 "is_default", "flops"]))
    if what == "seconds":
        rec["seconds"] = draw(st.sampled_from(SECONDS))
    elif what == "status":
        rec["status"] = draw(st.sampled_from(["wrong", "crash", "", "OK", None, 1]))
    elif what == "workload":
        rec["workload"] = draw(st.sampled_from(["", "0" * 64, others[0]["target"], 7, None]))
    elif what == "target":
        rec["target"] = draw(st.sampled_from(["", "f" * 64, others[0]["workload"], None]))
    elif what in ("config", "steps", "is_default", "flops"):
        rec[what] = draw(st.sampled_from(VALUES))
    elif what == "leaf":
        path = draw(st.sampled_from(_leaves(rec)))
        parent = rec
        for p in path[:-1]:
            parent = parent[p]
        parent[path[-1]] = draw(st.sampled_from(VALUES + STEP_INTS))
        return f"{'/'.join(map(str, path))} = {json.dumps(parent[path[-1]])}"
    else:
        key = draw(st.sampled_from(sorted(rec)))
        del rec[key]
        return f"field {key} dropped"
    return f"{what} = {json.dumps(rec.get(what))}"


def _edit_line(lines: list[str], draw: Any) -> str:
    k = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["truncate", "junk", "array", "deep", "deep_field", "bom", "huge"]))
    if how == "truncate":
        lines[k] = lines[k][: draw(st.integers(0, len(lines[k]) - 1))]
    elif how == "junk":
        lines[k] = draw(st.sampled_from(["not json", "{", "}", "null", "1", '"x"', "\x00"]))
    elif how == "array":
        lines[k] = "[" + lines[k] + "]"
    elif how == "deep":
        lines[k] = "[" * 100_000 + "]" * 100_000
    elif how == "deep_field":
        lines[k] = lines[k].replace('"error": ""', '"error": ' + "[" * 100_000 + "]" * 100_000, 1)
    elif how == "bom":
        lines[k] = "\ufeff" + lines[k]
    else:
        lines[k] = lines[k].replace('"error": ""', '"error": "' + "x" * 2_000_000 + '"', 1)
    return f"line {k + 1} {how}"


@st.composite
def tuning_cases(draw: Any, exported: str, lines_share: float = 0.25) -> TuningCase:
    """One or two edits of the records in ``exported`` (a JSON-lines text)."""
    recs = [json.loads(line) for line in exported.splitlines() if line.strip()]
    k = draw(st.integers(0, len(recs) - 1))
    rec = recs[k]
    steps = [f"record {k + 1}"]
    timed = False
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            steps.append(_edit_step(rec, draw))
        else:
            what = _edit_field(rec, draw, recs[:k] + recs[k + 1:] or recs)
            timed |= what.startswith(("seconds", "status"))
            steps.append(what)
    if not timed:  # make the edited record the one compile replays
        rec["seconds"], rec["status"] = 1e-9, "ok"
    lines = [json.dumps(r) for r in recs]
    if lines_share and draw(st.integers(0, 99)) < lines_share * 100:
        steps.append(_edit_line(lines, draw))
    return TuningCase(steps, "\n".join(lines) + "\n", via_cli=draw(st.integers(0, 2)) == 0)
