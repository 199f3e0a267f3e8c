"""A library made by the compiler exports its ABI: the in-process model and the loaded artifact
go through the same check, and an edited manifest of a real artifact is refused."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tessera.compiler import compile_graph
from tessera.graph.reference import run_reference
from tessera.runtime.artifact import MANIFEST, load_artifact, save_artifact
from tessera.runtime.compiled_model import CompiledModel
from tessera.runtime.program import ArtifactError

from ..compiler.helpers import GB
from .test_artifact import reseal


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("TESSERA_CACHE_DIR", str(tmp_path_factory.mktemp("build-cache")))
    b = GB("mm_relu")
    x = b.input("x", (5, 12))
    g = b.done(b.op("Relu", [b.op("MatMul", [x, b.randc("w", 12, 7)])]))
    comp = compile_graph(g, "host", tuning=False)
    mp.undo()
    return g, comp


def test_compiled_library_abi(compiled, tmp_path: Path) -> None:
    g, comp = compiled
    assert "long long tsr_abi(long long* out, long long capacity)" in comp.source
    model = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=1)
    x = np.random.default_rng(0).standard_normal((5, 12)).astype(np.float32)
    want = run_reference(g, {"x": x})[g.outputs[0]]
    np.testing.assert_allclose(model(x)[0], want, rtol=1e-5, atol=1e-5)
    path = save_artifact(model, tmp_path / "mm.tsa")
    np.testing.assert_allclose(load_artifact(path, num_threads=1)(x)[0], want, rtol=1e-5, atol=1e-5)

    d = json.loads(zipfile.ZipFile(path).read(MANIFEST))
    d["inputs"][0]["shape"] = [1, 1]  # a 4-byte input the library would read 240 bytes from
    bad = reseal(path, tmp_path / "bad.tsa", MANIFEST, json.dumps(d).encode())
    with pytest.raises(ArtifactError, match=r"bad.tsa: manifest of model 'mm_relu' does not match its library "
                                            r"\(input 0 bytes: library 240, manifest 4\)"):
        load_artifact(bad)
    edited = comp.manifest.from_dict({**comp.manifest.to_dict(), "arena_bytes": comp.manifest.arena_bytes + 64})
    with pytest.raises(ArtifactError, match=r"does not match its library \(arena bytes: library \d+, manifest \d+\)"):
        CompiledModel(comp.library, edited, comp.weights)
