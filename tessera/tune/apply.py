"""Compile-time use of the tuning database: the best record of a kernel's workload, replayed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tessera.loop.instantiate import GroupCompute
from tessera.schedule.primitives import Step
from tessera.schedule.rules import check_replay
from tessera.tune.database import TuningDB, TuningDBError, default_db_path
from tessera.tune.workload import instance_schedules, workload_key

log = logging.getLogger("tessera.tune")

Lookup = Callable[[GroupCompute, Any], "dict[str, list[Step]] | None"]


def open_db(tuning: Any) -> TuningDB | None:
    """The database ``tuning`` names, opened read-only: a TuningDB, a path (must exist), None for the
    default database if it exists and is readable (else a warning), False for none."""
    if tuning is False:
        return None
    if isinstance(tuning, TuningDB):
        return tuning
    if tuning is None:
        path = default_db_path()
        if not path.is_file():
            return None
        try:
            return TuningDB(path, readonly=True)
        except TuningDBError as e:  # a broken cache file must not break compiling
            log.warning("%s; compiling with default schedules", e)
            return None
    from pathlib import Path

    if not Path(tuning).is_file():
        raise TuningDBError(f"tuning database {tuning} does not exist")
    return TuningDB(tuning, readonly=True)


def tuned_schedules(db: TuningDB, gc: GroupCompute, target: Any) -> dict[str, list[Step]] | None:
    """Per-stage schedules from the best record of ``gc``'s workload on ``target``, or None."""
    rec = db.best(workload_key(gc), target.hash)
    if rec is None:
        return None
    try:
        scheds = instance_schedules(gc, [[Step.from_json(s) for s in stage] for stage in rec.steps])
        for st in gc.stages:
            check_replay(st, scheds[st.name])
    except (ValueError, KeyError, TypeError, IndexError) as e:
        log.warning("tuning record for workload %s does not replay (%s); using the default schedule",
                    rec.workload[:12], e)
        return None
    return scheds


def tuned_lookup(tuning: Any) -> Lookup | None:
    """A lookup function for :func:`tessera.compiler.lower_group`, or None when no database is used."""
    db = open_db(tuning)
    if db is None:
        return None
    return lambda gc, target: tuned_schedules(db, gc, target)
