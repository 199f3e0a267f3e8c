"""The tuning database: SQLite, keyed by (workload key, target description hash).

Every measured candidate is a record (failures included, with their status and error); the best
record of a key is the fastest one whose status is ``ok``, whose time is possible (finite, at
least :data:`MIN_SECONDS`) and that is not marked bad. Each record is committed as it arrives
(one transaction per insert, WAL journal), so an interrupted tuning run loses nothing and a
re-run resumes from what is stored. Records export to and import from JSON-lines files; an
import checks every line (:func:`record_from_json`) and adds nothing if one is malformed.

Each record carries a local *verdict* (schema 2, not exported): ``""`` (not checked yet),
``"verified"`` (its kernel matched the default schedule's on random inputs: measured by the
tuner, or checked when compile first used it) or ``"bad"`` (it does not fit its kernel's knob
space or computed something else; never chosen again), with the reason. A schema-1 database is
migrated when opened for writing.

Default location: ``$TESSERA_TUNING_DB``, else ``tuning.db`` in Tessera's cache directory
(``$TESSERA_CACHE_DIR`` or ``~/.cache/tessera``)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tessera.errors import TesseraError
from tessera.utils import atomic_output

DB_ENV = "TESSERA_TUNING_DB"
SCHEMA_VERSION = 2
MIN_SECONDS = 1e-9  # no kernel call returns in less than a nanosecond
MAX_FLOPS_PER_SECOND = 1e15  # a record claiming more arithmetic per second than this on a CPU is impossible
MAX_LINE_BYTES = 1 << 20  # one JSON-lines record (real ones are a few KiB)
MAX_TEXT = 10_000  # characters of a record's error / name fields
STATUSES = ("ok", "wrong", "crash", "timeout", "build_error", "error")
VERDICTS = ("", "verified", "bad")
_HASH = re.compile(r"[0-9a-f]{64}")

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
    uid TEXT NOT NULL UNIQUE,      -- content hash: the same record imported twice is stored once
    verdict TEXT NOT NULL DEFAULT '',        -- '' | verified | bad (local, never exported)
    verdict_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS records_key ON records (workload, target);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = ("workload", "target", "config", "steps", "status", "seconds", "is_default", "error", "flops",
            "workload_name", "target_name", "created")


_INSERT = (f"INSERT OR IGNORE INTO records ({', '.join(_COLUMNS)}, uid, verdict) "
           f"VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})")
_USABLE = "status = 'ok' AND seconds >= ? AND seconds < 1e300"  # finite, possible times only


class TuningDBError(TesseraError):
    """The tuning database cannot be opened, read or written, or a record is malformed."""


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
    def from_json(d: Any) -> Record:
        """A record from its JSON object, every field checked (raises TuningDBError)."""
        return record_from_json(d)


@dataclass
class Entry:
    """A stored record with its row id, content hash and local verdict."""

    id: int
    uid: str
    record: Record
    verdict: str = ""


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def possible_seconds(seconds: Any, flops: int = 0) -> str:
    """"" when ``seconds`` is a possible run time of a kernel of ``flops``, else why not."""
    if not _is_number(seconds) or not math.isfinite(seconds):
        return f"seconds must be a finite number, got {seconds!r}"
    if seconds < MIN_SECONDS:
        return f"seconds {seconds!r} is below {MIN_SECONDS:g} (impossible)"
    if flops and flops / seconds > MAX_FLOPS_PER_SECOND:
        return f"seconds {seconds!r} for {flops} FLOPs is over {MAX_FLOPS_PER_SECOND:g} FLOP/s (impossible)"
    return ""


def check_record(r: Record) -> None:
    """Raise TuningDBError unless every field of ``r`` has its type and a possible value."""
    for name in ("workload", "target"):
        v = getattr(r, name)
        if not isinstance(v, str) or not _HASH.fullmatch(v):
            raise TuningDBError(f"{name} must be a sha256 hex digest (64 lowercase hex digits), got {str(v)[:80]!r}")
    if not isinstance(r.config, list) or not all(isinstance(c, dict) and all(isinstance(k, str) for k in c)
                                                 for c in r.config):
        raise TuningDBError("config must be a list of objects (one knob point per stage)")
    if not isinstance(r.steps, list) or not all(isinstance(st, list) and all(isinstance(x, list) and x
                                                                             and isinstance(x[0], str) for x in st)
                                                for st in r.steps):
        raise TuningDBError("steps must be a list (per stage) of lists of steps [primitive, args...]")
    if any(not (isinstance(a, str) or _is_int(a)) for st in r.steps for x in st for a in x[1:]):
        raise TuningDBError("step arguments must be loop names or integers")
    if len(r.steps) != len(r.config):
        raise TuningDBError(f"steps has {len(r.steps)} stage(s), config has {len(r.config)}")
    if r.status not in STATUSES:
        raise TuningDBError(f"status must be one of {', '.join(STATUSES)}, got {str(r.status)[:40]!r}")
    if not _is_int(r.flops) or r.flops < 0:
        raise TuningDBError(f"flops must be a non-negative integer, got {r.flops!r}")
    if r.status == "ok":
        why = possible_seconds(r.seconds, r.flops)
        if why:
            raise TuningDBError(why)
    elif r.seconds is not None:
        raise TuningDBError(f"a record with status {r.status!r} has no time (seconds must be null)")
    if not isinstance(r.is_default, bool):
        raise TuningDBError(f"is_default must be true or false, got {r.is_default!r}")
    for name in ("error", "workload_name", "target_name"):
        v = getattr(r, name)
        if not isinstance(v, str) or len(v) > MAX_TEXT:
            raise TuningDBError(f"{name} must be a string of at most {MAX_TEXT} characters")
    if not _is_number(r.created) or not math.isfinite(r.created) or r.created < 0:
        raise TuningDBError(f"created must be a finite non-negative time, got {r.created!r}")


def record_from_json(d: Any) -> Record:
    """A checked record from one parsed JSON line (unknown keys are ignored)."""
    if not isinstance(d, dict):
        raise TuningDBError(f"a record is a JSON object, got {type(d).__name__}")
    missing = [k for k in ("workload", "target", "config", "steps", "status") if k not in d]
    if missing:
        raise TuningDBError(f"record lacks field(s) {', '.join(missing)}")
    r = Record(**{k: d[k] for k in _COLUMNS if k in d})
    check_record(r)
    return r


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
        """Open (``readonly``: an existing file, never written) or create the database at ``path``.
        A file that is not a Tessera tuning database (not SQLite, another application's tables, no
        records table) or one of a newer schema raises TuningDBError."""
        self.path = Path(path) if path is not None else default_db_path()
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = None
        try:
            if readonly:
                self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(str(self.path), timeout=30.0)
            self.schema = self._open()
        except (sqlite3.Error, OSError, ValueError) as e:
            self._drop()
            raise TuningDBError(f"cannot open tuning database {self.path}: {e}") from e
        except TuningDBError:
            self._drop()
            raise

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise TuningDBError(f"tuning database {self.path} is closed")
        return self._conn

    def _open(self) -> int:
        """Check (and for writing: create or migrate) the schema; returns its version."""
        c = self.conn
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and not self.readonly:
            c.execute("PRAGMA journal_mode=WAL")
            with c:
                c.executescript(_SCHEMA)
                c.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            return SCHEMA_VERSION
        if "records" not in tables or "meta" not in tables:
            raise TuningDBError(f"{self.path} is not a Tessera tuning database (it has no records table"
                                f"{'' if tables else ': an empty database'})")
        row = c.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        version = int(row[0]) if row is not None and str(row[0]).isdigit() else None
        if version is None:
            raise TuningDBError(f"{self.path} is not a Tessera tuning database (no schema version)")
        if version > SCHEMA_VERSION:
            raise TuningDBError(f"tuning database {self.path} has schema {version}, written by a newer Tessera; "
                                f"this one reads schema {SCHEMA_VERSION} and older")
        if version < 1:
            raise TuningDBError(f"tuning database {self.path} has an unknown schema {version}")
        if not self.readonly:
            c.execute("PRAGMA journal_mode=WAL")
            if version < 2:
                with c:  # schema 1 -> 2: local verdicts
                    c.execute("ALTER TABLE records ADD COLUMN verdict TEXT NOT NULL DEFAULT ''")
                    c.execute("ALTER TABLE records ADD COLUMN verdict_reason TEXT NOT NULL DEFAULT ''")
                    c.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
                version = SCHEMA_VERSION
        return version

    def close(self) -> None:
        """Fold the write-ahead log into the file and close."""
        if self._conn is None:
            return
        try:
            if not self.readonly:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError:
            pass  # another connection is reading: the log is folded in later
        self._drop()

    def size_bytes(self) -> int:
        """Bytes on disk (the file and its write-ahead log)."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal")) if p.exists())

    def __enter__(self) -> TuningDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise TuningDBError(f"cannot read tuning database {self.path}: {e}") from e

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self.readonly:
            raise TuningDBError(f"tuning database {self.path} is open read-only")
        try:
            with self.conn:
                self.conn.executemany(sql, rows)
        except sqlite3.Error as e:
            raise TuningDBError(f"cannot write to tuning database {self.path}: {e}") from e

    # ---- writing -------------------------------------------------------------------------------
    def add(self, rec: Record, verified: bool = False) -> None:
        """Check one record (TuningDBError if a field is impossible) and commit it; ``verified``:
        its outputs were already compared with the default schedule's (by the tuner)."""
        check_record(rec)
        self._write(_INSERT, [(*_row(rec), "verified" if verified and rec.status == "ok" else "")])

    def set_verdict(self, uid: str, verdict: str, reason: str = "") -> None:
        """Store the local verdict of the record with content hash ``uid``."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        self._write("UPDATE records SET verdict = ?, verdict_reason = ? WHERE uid = ?",
                    [(verdict, reason[:MAX_TEXT], uid)])

    # ---- reading -------------------------------------------------------------------------------
    def records(self, workload: str | None = None, target: str | None = None) -> list[Record]:
        """Records (in insertion order), optionally of one workload and/or target."""
        where, args = _where(workload, target)
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM records{where} ORDER BY id", args)
        return [r for r in (_record(row) for row in rows) if r is not None]

    def bad_traces(self, workload: str, target: str) -> set[str]:
        """Step traces (as stored, :func:`trace_text`) of the records of (workload, target) marked bad."""
        if self.schema < 2:
            return set()
        return {str(r[0]) for r in self._read("SELECT steps FROM records WHERE workload = ? AND target = ? "
                                               "AND verdict = 'bad'", (workload, target))}

    def _not_bad(self) -> str:
        return " AND verdict != 'bad'" if self.schema >= 2 else ""

    def candidates(self, workload: str, target: str, limit: int = 8) -> list[Entry]:
        """The ``limit`` fastest usable records of (workload, target) (ok, a possible time, not marked
        bad), fastest first, with their ids and verdicts."""
        verdict = "verdict" if self.schema >= 2 else "''"
        out: list[Entry] = []
        try:
            rows = self.conn.execute(
                f"SELECT id, uid, {verdict}, {', '.join(_COLUMNS)} FROM records WHERE workload = ? AND target = ? "
                f"AND {_USABLE}{self._not_bad()} ORDER BY seconds, id", (workload, target, MIN_SECONDS))
            for row in rows:  # lazily: rows that do not decode are skipped, not counted
                rec = _record(row[3:])
                if rec is not None:
                    out.append(Entry(int(row[0]), str(row[1]), rec, str(row[2])))
                    if len(out) >= limit:
                        break
        except sqlite3.Error as e:
            raise TuningDBError(f"cannot read tuning database {self.path}: {e}") from e
        return out

    def best(self, workload: str, target: str) -> Record | None:
        """The fastest usable record of (workload, target), or None."""
        found = self.candidates(workload, target, 1)
        return found[0].record if found else None

    def fastest(self, workload: str, target: str, k: int) -> list[tuple[int, Record]]:
        """The ``k`` fastest usable records of (workload, target) with their row ids."""
        return [(e.id, e.record) for e in self.candidates(workload, target, k)]

    def default_id(self, workload: str, target: str) -> int | None:
        """Row id of the measured default-schedule record of (workload, target), or None."""
        rows = self._read("SELECT id FROM records WHERE workload = ? AND target = ? AND is_default = 1 "
                          "AND status = 'ok' ORDER BY id LIMIT 1", (workload, target))
        return int(rows[0][0]) if rows else None

    def set_seconds(self, updates: dict[int, float]) -> None:
        """Replace the run time of records (by row id) with a newer measurement, in one transaction."""
        for t in updates.values():
            why = possible_seconds(t)
            if why:
                raise TuningDBError(f"cannot store a re-timing: {why}")
        self._write("UPDATE records SET seconds = ? WHERE id = ?", [(float(t), int(i)) for i, t in updates.items()])

    def default_record(self, workload: str, target: str) -> Record | None:
        """The measured default-schedule record of (workload, target), or None."""
        rows = self._read(f"SELECT {', '.join(_COLUMNS)} FROM records WHERE workload = ? AND target = ? "
                          "AND is_default = 1 ORDER BY id LIMIT 1", (workload, target))
        return _record(rows[0]) if rows else None

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM records")[0][0])

    def verdicts(self) -> dict[str, int]:
        """How many records have each verdict (``""``: not checked yet)."""
        if self.schema < 2:
            return {"": self.count()}
        return {str(v): int(n) for v, n in self._read("SELECT verdict, COUNT(*) FROM records GROUP BY verdict")}

    # ---- files ---------------------------------------------------------------------------------
    def export_jsonl(self, path: str | os.PathLike[str], workload: str | None = None,
                     target: str | None = None) -> int:
        """Write records as JSON lines (atomically); returns how many. Verdicts are local: not written."""
        recs = self.records(workload, target)
        try:
            with atomic_output(path) as tmp, open(tmp, "w") as f:
                for r in recs:
                    f.write(json.dumps(r.to_json(), sort_keys=True) + "\n")
        except OSError as e:
            raise TuningDBError(f"cannot write tuning records to {path}: {e}") from e
        return len(recs)

    def import_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Add the records of a JSON-lines file (duplicates are skipped); returns how many lines were
        read. All or nothing: the first malformed line (not JSON, not an object, a missing field, a
        wrong type, an impossible time, nesting too deep, a line over :data:`MAX_LINE_BYTES`) raises
        TuningDBError naming the file and line, and nothing of the file is added."""
        rows = []
        try:
            with open(path, "rb") as f:
                k = 0
                while True:
                    raw = f.readline(MAX_LINE_BYTES + 1)
                    if not raw:
                        break
                    k += 1
                    if len(raw) > MAX_LINE_BYTES:
                        raise TuningDBError(f"{path}:{k}: line longer than {MAX_LINE_BYTES} bytes: not a tuning record")
                    if not raw.strip():
                        continue
                    rows.append((*_row(_parse_line(raw, path, k)), ""))
        except OSError as e:
            raise TuningDBError(f"cannot read tuning records from {path}: {e}") from e
        self._write(_INSERT, rows)
        return len(rows)


def _parse_line(raw: bytes, path: Any, k: int) -> Record:
    try:
        d = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise TuningDBError(f"{path}:{k}: not a tuning record: not UTF-8 text ({e.reason})") from None
    except RecursionError:
        raise TuningDBError(f"{path}:{k}: not a tuning record: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or an integer too long to convert
        raise TuningDBError(f"{path}:{k}: not a tuning record: {e}") from None
    try:
        return record_from_json(d)
    except TuningDBError as e:
        raise TuningDBError(f"{path}:{k}: {e}") from None
    except (TypeError, RecursionError) as e:
        raise TuningDBError(f"{path}:{k}: not a tuning record: {type(e).__name__}") from None


def _where(workload: str | None, target: str | None) -> tuple[str, tuple[str, ...]]:
    conds, args = [], []
    if workload is not None:
        conds.append("workload = ?")
        args.append(workload)
    if target is not None:
        conds.append("target = ?")
        args.append(target)
    return (" WHERE " + " AND ".join(conds) if conds else ""), tuple(args)


def trace_text(r: Record) -> str:
    """A record's step trace as the database stores it."""
    return json.dumps(r.steps, separators=(",", ":"))


def _row(r: Record) -> tuple[Any, ...]:
    row = (r.workload, r.target, json.dumps(r.config, sort_keys=True, separators=(",", ":")),
           trace_text(r), r.status, r.seconds, int(r.is_default), r.error,
           int(r.flops), r.workload_name, r.target_name, float(r.created))
    return (*row, hashlib.sha256(json.dumps(row).encode()).hexdigest())


def _record(row: Any) -> Record | None:
    """A stored row as a Record, or None for a row another program wrote that does not decode."""
    d = dict(zip(_COLUMNS, row, strict=True))
    try:
        d["config"] = json.loads(d["config"])
        d["steps"] = json.loads(d["steps"])
    except (TypeError, ValueError, RecursionError):
        return None
    d["is_default"] = bool(d["is_default"])
    return Record(**d)
