"""Fixtures for the end-to-end compiler tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A compile cache private to this test session (so results do not depend on earlier runs)."""
    path = tmp_path_factory.mktemp("tessera_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESSERA_CACHE_DIR", str(path))
        yield path
