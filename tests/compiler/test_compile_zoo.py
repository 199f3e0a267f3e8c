"""Every zoo model compiled for x86-avx2 matches PyTorch eager; artifacts round-trip.

Uses the user's compile cache (``$TESSERA_CACHE_DIR`` or ``~/.cache/tessera``) so reruns skip the C
compiler."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tessera.api import load_zoo_model
from tessera.compiler import compile_graph
from tessera.models import MODEL_NAMES, get_model
from tessera.runtime import CompiledModel, load_artifact, save_artifact
from tessera.targets import is_native, load_target

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow
TARGET = "x86-avx2"
TOLERANCE = 1e-4  # max |compiled - eager| / max |eager|, per output


def _rel_err(ref: np.ndarray, got: np.ndarray) -> float:
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) / scale


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_zoo_model_matches_eager(name: str, tmp_path: Path) -> None:
    if not is_native(load_target(TARGET)):
        pytest.skip(f"this CPU cannot run {TARGET} code")
    zm = get_model(name)
    with torch.no_grad():
        eager = zm.module(*zm.example_inputs)
    eager_list = [eager] if isinstance(eager, torch.Tensor) else list(eager)
    want = [t.detach().numpy() for t in eager_list]
    feeds = [t.numpy() for t in zm.example_inputs]

    g = load_zoo_model(name, "torch")
    shapes = {n: tuple(x.shape) for n, x in zip(g.inputs, feeds, strict=True)}
    t0 = time.perf_counter()
    comp = compile_graph(g, TARGET, shapes)
    seconds = time.perf_counter() - t0
    model = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=2)
    got = model(*feeds)
    assert len(got) == len(want)
    errs = [_rel_err(w, y) for w, y in zip(want, got, strict=True)]
    mem = comp.manifest.memory
    print(f"\n{name}: compile {seconds:.1f} s, {len(comp.kernels)} kernels, rel err {max(errs):.2e}, "
          f"peak {mem.peak_activation_bytes / 2**20:.1f} MiB vs naive {mem.naive_activation_bytes / 2**20:.1f} MiB")
    for w, y, e in zip(want, got, errs, strict=True):
        assert y.shape == w.shape and y.dtype == w.dtype
        assert e <= TOLERANCE, f"{name}: rel err {e:.3e} > {TOLERANCE}"
    assert mem.peak_activation_bytes <= mem.naive_activation_bytes
    if name == "resnet50":
        assert mem.peak_activation_bytes * 2 <= mem.naive_activation_bytes, mem

    path = save_artifact(model, tmp_path / f"{name}.tsa")
    loaded = load_artifact(path, num_threads=2)
    assert loaded.manifest.outputs == comp.manifest.outputs
    for a, b in zip(got, loaded(*feeds), strict=True):
        np.testing.assert_array_equal(a, b)
