"""Compile-time use of the tuning database: the best record of a kernel's workload, checked, replayed.

A record is used only when it fits the kernel (:func:`tessera.tune.verify.record_schedules`) and
its kernel was checked against the default schedule's on random inputs: by the tuner when it
measured it, or here, once, the first time compile picks it (:class:`tessera.tune.verify.KernelCheck`).
The outcome is stored as the record's verdict, so a check runs once per record; a record that
does not fit or fails is marked bad (one warning naming the workload) and the next fastest is
tried. When the database cannot be written (read-only file or directory, a read-only
:class:`TuningDB` passed in), the check still runs and its outcome is kept in memory for the
process. Records for a target this machine cannot run are used only if already verified."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera.loop.instantiate import GroupCompute
from tessera.schedule.primitives import Step
from tessera.schedule.validate import ScheduleError
from tessera.tune.database import Entry, TuningDB, TuningDBError, default_db_path
from tessera.tune.verify import KernelCheck, Unverifiable, record_schedules
from tessera.tune.workload import workload_key

log = logging.getLogger("tessera.tune")

Lookup = Callable[[GroupCompute, Any], "dict[str, list[Step]] | None"]

CANDIDATES = 4  # fastest records tried per workload before falling back to the default schedule
# verdicts of this process, by (database path, record uid): what could not be written down
_MEMORY: dict[tuple[str, str], str] = {}
_WARNED: set[tuple[str, str]] = set()


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
    if not Path(tuning).is_file():
        raise TuningDBError(f"tuning database {tuning} does not exist")
    return TuningDB(tuning, readonly=True)


def _warn_once(key: tuple[str, str], msg: str, *args: Any) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(msg, *args)


class RecordLookup:
    """``lookup(gc, target)``: the checked schedules of the best usable record, or None (see the
    module docstring). ``writable``: verdicts may be written (through a second connection when
    ``db`` is open read-only)."""

    def __init__(self, db: TuningDB, writable: bool = True) -> None:
        self.db = db
        self.writable = writable
        self._writer: TuningDB | None = None if db.readonly else db
        self._checks: dict[str, KernelCheck] = {}
        self._chosen: dict[tuple[str, str], str | None] = {}  # (workload, target) -> uid used

    @property
    def _where(self) -> str:
        return str(self.db.path.resolve())

    def verdict(self, e: Entry) -> str:
        return _MEMORY.get((self._where, e.uid), e.verdict)

    def mark(self, e: Entry, verdict: str, reason: str) -> None:
        """Record a verdict in the database when possible, in this process's memory always."""
        _MEMORY[(self._where, e.uid)] = verdict
        if not self.writable:
            return
        try:
            if self._writer is None:
                self._writer = TuningDB(self.db.path)
            self._writer.set_verdict(e.uid, verdict, reason)
        except TuningDBError as err:
            self.writable = False
            _warn_once((self._where, "readonly"), "%s; record checks are kept for this process only", err)

    def __call__(self, gc: GroupCompute, target: Any) -> dict[str, list[Step]] | None:
        key = (workload_key(gc), target.hash)
        try:
            entries = self.db.candidates(*key, limit=CANDIDATES)
        except TuningDBError as err:  # e.g. a database damaged after it was opened
            _warn_once((self._where, "read"), "%s; compiling with default schedules", err)
            return None
        for e in entries:
            if key in self._chosen and self._chosen[key] != e.uid:
                continue  # an earlier instance of this workload settled on another record (or none)
            if self.verdict(e) == "bad":
                continue
            scheds = self._try(gc, target, e)
            if scheds is not None:
                self._chosen[key] = e.uid
                return scheds
            if self.verdict(e) != "bad":  # not checkable here: the default schedule, without marking it
                break
        self._chosen[key] = None
        return None

    def _try(self, gc: GroupCompute, target: Any, e: Entry) -> dict[str, list[Step]] | None:
        name = f"{e.record.workload_name} ({e.record.workload[:12]})" if e.record.workload_name else \
            e.record.workload[:12]
        try:
            fitted = record_schedules(gc, target, e.record)
        except ScheduleError as err:
            self.mark(e, "bad", f"does not fit: {err}")
            _warn_once((self._where, e.uid), "tuning record for workload %s does not fit the kernel (%s); "
                       "marked bad, not used again", name, err)
            return None
        if fitted.is_default or self.verdict(e) == "verified":
            return fitted.schedules
        check = self._checks.get(target.hash)
        if check is None:
            check = self._checks[target.hash] = KernelCheck(target)
        try:
            why = check.check(gc, fitted.schedules)
        except Unverifiable as err:
            _warn_once((self._where, f"unverifiable:{e.uid}"), "tuning record for workload %s cannot be "
                       "checked (%s); using the default schedule", name, err)
            return None
        if why:
            self.mark(e, "bad", why)
            _warn_once((self._where, e.uid), "tuning record for workload %s failed its check against the "
                       "default schedule (%s); marked bad, not used again", name, why)
            return None
        self.mark(e, "verified", "")
        return fitted.schedules

    def close(self) -> None:
        """Stop check workers and close the verdict connection (not ``db``)."""
        for c in self._checks.values():
            c.close()
        self._checks.clear()
        if self._writer is not None and self._writer is not self.db:
            self._writer.close()
        self._writer = None


def tuned_schedules(db: TuningDB, gc: GroupCompute, target: Any) -> dict[str, list[Step]] | None:
    """Per-stage schedules from the best usable record of ``gc``'s workload on ``target``, or None."""
    lookup = RecordLookup(db)
    try:
        return lookup(gc, target)
    finally:
        lookup.close()


def tuned_lookup(tuning: Any) -> RecordLookup | None:
    """A lookup function for :func:`tessera.compiler.lower_group`, or None when no database is used.
    A read-only :class:`TuningDB` passed in is never written (verdicts stay in memory)."""
    db = open_db(tuning)
    if db is None:
        return None
    return RecordLookup(db, writable=not (isinstance(tuning, TuningDB) and tuning.readonly))
