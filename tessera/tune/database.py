"""The tuning database: SQLite, keyed by (workload key, target description hash).

Every measured candidate is a record (failures included, with their status and error); the best
record of a key is the fastest one whose status is ``ok``. Each record is committed as it
arrives (one transaction per insert, WAL journal), so an interrupted tuning run loses nothing
and a re-run resumes from what is stored. Records export to and import from JSON-lines files.

Default location: ``$TESSERA_TUNING_DB``, else ``tuning.db`` in Tessera's cache directory
(``$TESSERA_CACHE_DIR`` or ``~/.cache/tessera``)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tessera.errors import TesseraError
from tessera.utils import atomic_output

DB_ENV = "TESSERA_TUNING_DB"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workload TEXT NOT NULL,
    target TEXT NOT NULL,
    config TEXT NOT NULL,          -- knob point (JSON), one dict per stage
    steps TEXT NOT NULL,           -- replayable step trace per stage, canonical loop names (JSON)
    status TEXT NOT NULL,          -- ok | wrong | crash | timeout | build_error | error
    seconds REAL,                  -- median run time (status ok only; the latest re-timing, if any)
    is_default INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    flops INTEGER NOT NULL DEFAULT 0,
    workload_name TEXT NOT NULL DEFAULT '',
    target_name TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    uid TEXT NOT NULL UNIQUE       -- content hash: the same record imported twice is stored once
);
CREATE INDEX IF NOT EXISTS records_key ON records (workload, target);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = ("workload", "target", "config", "steps", "status", "seconds", "is_default", "error", "flops",
            "workload_name", "target_name", "created")


_INSERT = (f"INSERT OR IGNORE INTO records ({', '.join(_COLUMNS)}, uid) "
           f"VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})")


class TuningDBError(TesseraError):
    """The tuning database cannot be opened, read or written."""


@dataclass
class Record:
    """One measured candidate. ``config``/``steps`` are JSON data (lists per stage)."""

    workload: str
    target: str
    config: list[dict[str, Any]]
    steps: list[list[list[Any]]]
    status: str
    seconds: float | None = None
    is_default: bool = False
    error: str = ""
    flops: int = 0
    workload_name: str = ""
    target_name: str = ""
    created: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Record:
        missing = [k for k in ("workload", "target", "config", "steps", "status") if k not in d]
        if missing:
            raise TuningDBError(f"record lacks field(s) {', '.join(missing)}")
        return Record(**{k: d[k] for k in _COLUMNS if k in d})


def default_db_path() -> Path:
    """``$TESSERA_TUNING_DB``, else ``tuning.db`` in the compile cache directory."""
    env = os.environ.get(DB_ENV)
    if env:
        return Path(env)
    from tessera.targets.toolchain import cache_dir

    return cache_dir() / "tuning.db"


class TuningDB:
    """A tuning database file (created on first use)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, readonly: bool = False) -> None:
        """Open (``readonly``: an existing file, never written) or create the database at ``path``."""
        self.path = Path(path) if path is not None else default_db_path()
        self.readonly = readonly
        try:
            if readonly:
                self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(str(self.path), timeout=30.0)
                self._conn.execute("PRAGMA journal_mode=WAL")
                with self._conn:
                    self._conn.executescript(_SCHEMA)
                    self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as e:
            raise TuningDBError(f"cannot open tuning database {self.path}: {e}") from e
        if row is None or row[0] != str(SCHEMA_VERSION):
            raise TuningDBError(f"tuning database {self.path} has schema {row and row[0]}, "
                                f"this Tessera reads {SCHEMA_VERSION}")

    def close(self) -> None:
        """Fold the write-ahead log into the file and close."""
        try:
            if not self.readonly:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError:
            pass  # another connection is reading: the log is folded in later
        self._conn.close()

    def size_bytes(self) -> int:
        """Bytes on disk (the file and its write-ahead log)."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal")) if p.exists())

    def __enter__(self) -> TuningDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing -------------------------------------------------------------------------------
    def add(self, rec: Record) -> None:
        """Insert one record and commit it."""
        row = _row(rec)
        try:
            with self._conn:
                self._conn.execute(_INSERT, row)
        except sqlite3.DatabaseError as e:
            raise TuningDBError(f"cannot write to tuning database {self.path}: {e}") from e

    # ---- reading -------------------------------------------------------------------------------
    def records(self, workload: str | None = None, target: str | None = None) -> list[Record]:
        """Records (in insertion order), optionally of one workload and/or target."""
        where, args = _where(workload, target)
        rows = self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM records{where} ORDER BY id", args)
        return [_record(r) for r in rows]

    def best(self, workload: str, target: str) -> Record | None:
        """The fastest correct record of (workload, target), or None."""
        row = self._conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM records WHERE workload = ? AND target = ? AND status = 'ok' "
            "AND seconds IS NOT NULL ORDER BY seconds, id LIMIT 1", (workload, target)).fetchone()
        return _record(row) if row else None

    def fastest(self, workload: str, target: str, k: int) -> list[tuple[int, Record]]:
        """The ``k`` fastest correct records of (workload, target) with their row ids."""
        rows = self._conn.execute(
            f"SELECT id, {', '.join(_COLUMNS)} FROM records WHERE workload = ? AND target = ? AND status = 'ok' "
            "AND seconds IS NOT NULL ORDER BY seconds, id LIMIT ?", (workload, target, k)).fetchall()
        return [(int(r[0]), _record(r[1:])) for r in rows]

    def default_id(self, workload: str, target: str) -> int | None:
        """Row id of the measured default-schedule record of (workload, target), or None."""
        row = self._conn.execute("SELECT id FROM records WHERE workload = ? AND target = ? AND is_default = 1 "
                                 "AND status = 'ok' ORDER BY id LIMIT 1", (workload, target)).fetchone()
        return int(row[0]) if row else None

    def set_seconds(self, updates: dict[int, float]) -> None:
        """Replace the run time of records (by row id) with a newer measurement, in one transaction."""
        try:
            with self._conn:
                self._conn.executemany("UPDATE records SET seconds = ? WHERE id = ?",
                                       [(float(t), int(i)) for i, t in updates.items()])
        except sqlite3.DatabaseError as e:
            raise TuningDBError(f"cannot write to tuning database {self.path}: {e}") from e

    def default_record(self, workload: str, target: str) -> Record | None:
        """The measured default-schedule record of (workload, target), or None."""
        row = self._conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM records WHERE workload = ? AND target = ? AND is_default = 1 "
            "ORDER BY id LIMIT 1", (workload, target)).fetchone()
        return _record(row) if row else None

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    # ---- files ---------------------------------------------------------------------------------
    def export_jsonl(self, path: str | os.PathLike[str], workload: str | None = None,
                     target: str | None = None) -> int:
        """Write records as JSON lines (atomically); returns how many."""
        recs = self.records(workload, target)
        with atomic_output(path) as tmp, open(tmp, "w") as f:
            for r in recs:
                f.write(json.dumps(r.to_json(), sort_keys=True) + "\n")
        return len(recs)

    def import_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Add the records of a JSON-lines file (duplicates are skipped) in one transaction; returns
        how many lines were read."""
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as e:
            raise TuningDBError(f"cannot read tuning records from {path}: {e}") from e
        recs = []
        for k, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                recs.append(Record.from_json(json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise TuningDBError(f"{path}:{k}: not a tuning record: {e}") from e
            except TuningDBError as e:
                raise TuningDBError(f"{path}:{k}: {e}") from e
        with self._conn:
            self._conn.executemany(_INSERT, [_row(r) for r in recs])
        return len(recs)


def _where(workload: str | None, target: str | None) -> tuple[str, tuple[str, ...]]:
    conds, args = [], []
    if workload is not None:
        conds.append("workload = ?")
        args.append(workload)
    if target is not None:
        conds.append("target = ?")
        args.append(target)
    return (" WHERE " + " AND ".join(conds) if conds else ""), tuple(args)


def _row(r: Record) -> tuple[Any, ...]:
    row = (r.workload, r.target, json.dumps(r.config, sort_keys=True, separators=(",", ":")),
           json.dumps(r.steps, separators=(",", ":")), r.status, r.seconds, int(r.is_default), r.error,
           int(r.flops), r.workload_name, r.target_name, float(r.created))
    return (*row, hashlib.sha256(json.dumps(row).encode()).hexdigest())


def _record(row: Any) -> Record:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["config"] = json.loads(d["config"])
    d["steps"] = json.loads(d["steps"])
    d["is_default"] = bool(d["is_default"])
    return Record(**d)

