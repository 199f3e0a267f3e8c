"""Fixtures for the fuzz tests: one sandbox child process per test module, a private cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A persistent child process running the cases; a crash or a hang fails only that case."""
    box = Sandbox(tmp_path_factory.mktemp("fuzz"), timeout=60.0)
    yield box
    box.close()
