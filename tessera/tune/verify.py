"""What a tuning record must pass before ``tessera.compile`` uses it.

1. :func:`record_schedules`: it fits the kernel: every step is legal for its stage
   (:func:`tessera.schedule.validate.validate_steps`), its knob point is a point of the kernel's
   knob space, and its steps are exactly the ones that point gives under the current rules (so
   every schedule compile replays is one the rules can make: a hand-edited or stale trace is not).
2. :class:`KernelCheck`: once per record, its kernel and the default schedule's are built as
   standalone kernels (the tuner's harness) and run in the tuner's isolated worker process on
   seeded random inputs; the outputs must agree (the tuner's tolerance). A crash, a time-out or a
   different result makes the record bad."""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Any

from tessera.loop.instantiate import GroupCompute
from tessera.schedule.primitives import Step
from tessera.schedule.validate import ScheduleError, validate_steps
from tessera.tune.database import Record
from tessera.tune.space import TaskSpace
from tessera.tune.workload import canonical_schedules, instance_schedules

CHECK_SEED = 0
CHECK_TIMEOUT = 60.0  # seconds for the default's or the record's two runs in the worker


def _canonical_json(gc: GroupCompute, schedules: dict[str, list[Step]]) -> str:
    return json.dumps([[s.to_json() for s in stage] for stage in canonical_schedules(gc, schedules)],
                      separators=(",", ":"))


@dataclass
class Fitted:
    """A record's schedules for one kernel instance, and whether they are the default schedule's."""

    schedules: dict[str, list[Step]]
    is_default: bool


def record_schedules(gc: GroupCompute, target: Any, rec: Record) -> Fitted:
    """``rec``'s per-stage schedules for ``gc`` (instance loop names), checked as the module
    docstring says; raises :class:`ScheduleError` saying why it does not fit."""
    try:
        steps = [[Step.from_json(list(s)) for s in stage] for stage in rec.steps]
        scheds = instance_schedules(gc, steps)
    except (ValueError, TypeError, IndexError) as e:
        raise ScheduleError(str(e)) from None
    for st in gc.stages:
        validate_steps(st, scheds[st.name])
    space = TaskSpace(gc, target)
    try:
        expected = space.schedules(space.complete(rec.config))
    except (ValueError, TypeError, KeyError) as e:
        raise ScheduleError(f"its knob point is not in the kernel's knob space: {e}") from None
    if _canonical_json(gc, expected) != json.dumps(rec.steps, separators=(",", ":")):
        raise ScheduleError("its steps are not the schedule its knob point gives (edited, or from other rules)")
    default = space.schedules(space.default())
    return Fitted(scheds, _canonical_json(gc, default) == _canonical_json(gc, scheds))


class Unverifiable(Exception):
    """The check could not run (no runnable default, a target this machine cannot run)."""


class KernelCheck:
    """Runs records' kernels against the default schedule's (one worker process, started on first use
    and stopped when this object is collected or closed)."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self._meas: Any = None

    def _measurer(self) -> Any:
        if self._meas is None:
            from tessera.tune.measure import Measurer

            self._meas = Measurer(self.target, timeout=CHECK_TIMEOUT, min_seconds=0.0, min_repeat=1, max_repeat=1,
                                  cold_constants=False)
            weakref.finalize(self, self._meas.close)
        return self._meas

    def close(self) -> None:
        if self._meas is not None:
            self._meas.close()
            self._meas = None

    def check(self, gc: GroupCompute, schedules: dict[str, list[Step]]) -> str:
        """"" when the kernel of ``schedules`` computes what the default schedule's does on random
        inputs, else what went wrong. Raises :class:`Unverifiable` when the check cannot run."""
        from tessera.schedule.rules import schedule_stages
        from tessera.targets import is_native
        from tessera.tune.harness import render_kernel_source, task_data

        if not is_native(self.target):
            raise Unverifiable(f"this machine cannot run code for target {self.target.name}")
        default = schedule_stages(gc.stages, self.target, frozenset(gc.constants))
        data = task_data(gc, CHECK_SEED)
        meas = self._measurer()
        built = meas.build([lambda: render_kernel_source(gc, default, data, self.target),
                            lambda: render_kernel_source(gc, schedules, data, self.target)])
        if isinstance(built[0], Exception):
            raise Unverifiable(f"the default schedule does not build: {built[0]}")
        ref = meas.run(built[0], None)
        if ref.status != "ok" or ref.outputs is None:
            raise Unverifiable(f"the default schedule did not run ({ref.status}: {ref.error})")
        if isinstance(built[1], Exception):
            return f"its kernel does not build: {type(built[1]).__name__}: {str(built[1])[:300]}"
        res = meas.run(built[1], ref.outputs)
        if res.status != "ok":
            return f"its kernel {'computes a different result' if res.status == 'wrong' else res.status}: " \
                   f"{res.error[:300]}"
        return ""
