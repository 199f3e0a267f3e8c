"""Fixtures: a tiny hand-written C library implementing the runtime ABI, built once per session."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tessera.runtime.program import CompileInfo, Manifest, MemoryStats, TargetInfo, TensorSpec, WeightSpec, host_arch

HERE = Path(__file__).parent


@dataclass
class Fixture:
    library: Path
    weights: np.ndarray  # uint8 blob
    w: np.ndarray
    b: np.ndarray

    def manifest(self, **overrides) -> Manifest:
        fields = dict(
            model_name="fixture",
            target=TargetInfo(name="test-cpu", hash="0123abcd", arch=host_arch()),
            inputs=[TensorSpec("x", "float32", (4, 8)), TensorSpec("y", "int64", (3,))],
            outputs=[
                TensorSpec("sum", "float32", (4, 8)),
                TensorSpec("twice", "int64", (3,)),
                TensorSpec("nthreads", "int32", (1,)),
            ],
            weights_nbytes=192,
            arena_bytes=128,
            weights=[WeightSpec("w", 0, 128, "float32", (4, 8)), WeightSpec("b", 128, 32, "float32", (8,))],
            memory=MemoryStats(peak_activation_bytes=128, naive_activation_bytes=128),
            compile=CompileInfo(tessera_version="0.1.0", compiled_at="2025-01-01T00:00:00Z", compile_seconds=0.1),
        )
        fields.update(overrides)
        return Manifest(**fields)

    def expected(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x + self.w + self.b, 2 * y


def build_fixture_library(out: Path, *defines: str) -> Path:
    """Compile the ABI test library (``-D`` ``defines`` vary it) to ``out``."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not available")
    flags = [f"-D{d}" for d in defines]
    cmd = [gcc, "-O2", "-shared", "-fPIC", "-fopenmp", *flags, str(HERE / "fixture_model.c"), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def fixture_lib(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    out = build_fixture_library(tmp_path_factory.mktemp("fixture_lib") / "fixture.so")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    blob = np.zeros(192, dtype=np.uint8)
    blob[:128] = w.view(np.uint8).ravel()
    blob[128:160] = b.view(np.uint8)
    return Fixture(out, blob, w, b)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TESSERA_ARTIFACT_KEY", raising=False)  # tests that sign set their own key
