"""Fixtures for the auto-scheduler tests: a private compile cache and tuning database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def tune_env(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[Path]:
    """Compile cache shared by the session's tune tests; the default tuning DB in this test's folder."""
    cache = tmp_path_factory.getbasetemp() / "tune_cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESSERA_CACHE_DIR", str(cache))
        mp.setenv("TESSERA_TUNING_DB", str(tmp_path / "default.db"))
        yield tmp_path
