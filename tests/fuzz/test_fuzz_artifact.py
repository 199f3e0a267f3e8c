"""Fuzz: damaged ``.tsa`` artifacts must give a clean error on load or run, or the unmodified
artifact's output; never a crash, a hang, a traceback or a silently different answer. Every
load and run happens in the sandbox child (a segfault fails the case, not pytest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from tests.fuzz.artifact_cases import ArtifactCase, Blob, artifact_cases
from tests.fuzz.judge import FUZZ, clean_errors, compare, died
from tests.fuzz.onnx_cases import BASES
from tests.fuzz.sandbox import Sandbox

EXAMPLES = 300


@dataclass
class Originals:
    data: bytes  # the artifact every case edits
    other: bytes  # another model's artifact (its library is swapped in)
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]  # the unmodified artifact's outputs on ``inputs``


def _build(sandbox: Sandbox, base: str, path: Path) -> bytes:
    reply = sandbox.call("build_artifact", payload=BASES[base]().SerializeToString(), path=str(path))
    assert reply.stages == {"compile": "ok", "save": "ok"}, reply
    return path.read_bytes()


@pytest.fixture(scope="module")
def originals(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Originals:
    tmp = tmp_path_factory.mktemp("artifacts")
    data = _build(sandbox, "chain", tmp / "chain.tsa")
    other = _build(sandbox, "conv", tmp / "conv.tsa")
    inputs = [np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)]
    reply = sandbox.call("artifact", path=str(tmp / "chain.tsa"), inputs=inputs)
    assert reply.stages == {"load": "ok", "run": "ok"}, reply
    return Originals(data, other, inputs, reply.values["outputs"])


def test_unmodified_artifact_runs(originals: Originals) -> None:
    """The starting point: the saved chain model (MatMul, Add, Relu, Softmax) gives rows summing to 1."""
    (y,) = originals.outputs
    assert y.shape == (3, 5) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def check(sandbox: Sandbox, originals: Originals, case: ArtifactCase, tmp: Path) -> None:
    path = tmp / "case.tsa"
    path.write_bytes(case.data)
    reply = sandbox.call("artifact", path=str(path), inputs=originals.inputs)
    problems = died(reply) + clean_errors(reply, ("load", "run"))
    if "outputs" in reply.values:
        problems += compare(reply.values["outputs"], originals.outputs, "damaged artifact vs unmodified", rtol=1e-6)
    assert not problems, f"{case!r}:\n" + "\n".join(problems)


def test_damaged_artifacts(sandbox: Sandbox, originals: Originals, tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("cases")

    @settings(FUZZ, max_examples=EXAMPLES)
    @given(case=artifact_cases(Blob("chain.tsa", originals.data), Blob("conv.tsa", originals.other)))
    def run(case: ArtifactCase) -> None:
        check(sandbox, originals, case, tmp)

    run()
