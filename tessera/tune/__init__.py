"""The auto-scheduler: tuning tasks from a model's kernels, knob-space search guided by a learned
cost model, isolated measurement, and a tuning database that ``tessera.compile`` reads.

Entry points: :func:`tessera.tune.tasks.extract_tasks`, :func:`tessera.tune.tuner.tune`,
:class:`tessera.tune.database.TuningDB`; the command line is ``tessera tune``."""

from __future__ import annotations

from tessera.tune.database import Record, TuningDB, default_db_path

__all__ = ["Record", "TuningDB", "default_db_path"]
