"""Index values read from tensors at run time (Gather, GatherElements, GatherND, ScatterElements,
ScatterND): valid ones (``[-n, n-1]``, negatives wrapped) give the reference's answer; one out of
range fails the run with an ExecutionError naming the node, never a clamped answer; the error is
reset, so the next call with valid indices is right again. Also: the same through an artifact,
and the ``torch.compile`` backend, where the failed compiled run is re-run eagerly (IndexError)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tessera.compiler import compile_graph
from tessera.errors import GraphError
from tessera.graph.ir import Graph
from tessera.graph.reference import run_reference
from tessera.runtime import CompiledModel
from tessera.runtime.program import ExecutionError
from tests.compiler.helpers import GB, assert_matches


@dataclass(frozen=True)
class Case:
    """A one-node graph whose input ``ind`` holds indices into ``axis`` (size ``n``) of ``data``."""

    op: str
    data: tuple[int, ...]
    ind: tuple[int, ...]
    axis: int  # the axis the message names
    n: int
    upd: tuple[int, ...] | None = None
    attrs: tuple[tuple[str, object], ...] = ()
    ind_dtype: str = "i64"
    valid: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None = None

    @property
    def node(self) -> str:
        return f"n_{self.op.lower()}_{self.axis}"


def _distinct_rows(n: int) -> Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]:
    """Indices along axis 0 that are distinct in every column (scatter "none": no write order matters)."""
    def make(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        cols = [rng.permutation(np.arange(-n, n) % n)[: shape[0]] for _ in range(int(np.prod(shape[1:])))]
        idx = np.stack(cols, axis=1).reshape(shape)
        return np.where(rng.random(shape) < 0.5, idx - n, idx)  # half of them negative
    return make


_ND = ("GatherND", "ScatterND")
CASES = [
    Case("Gather", (40, 16), (8, 25), 0, 40, attrs=(("axis", 0),)),
    Case("Gather", (6, 30), (5,), 1, 30, attrs=(("axis", 1),), ind_dtype="i32"),
    Case("GatherElements", (8, 12), (8, 20), 1, 12, attrs=(("axis", 1),)),
    Case("GatherND", (6, 7, 5), (10, 2), 1, 7),
    Case("ScatterElements", (10, 6), (4, 6), 0, 10, upd=(4, 6), attrs=(("axis", 0), ("reduction", "none")),
         valid=_distinct_rows(10)),
    Case("ScatterElements", (10, 6), (12, 6), 0, 10, upd=(12, 6), attrs=(("axis", 0), ("reduction", "add"))),
    Case("ScatterND", (8, 5), (3, 1), 0, 8, upd=(3, 5), valid=_distinct_rows(8)),
    Case("ScatterND", (6, 7), (9, 2), 1, 7, upd=(9,), attrs=(("reduction", "add"),)),
]


def _graph(c: Case) -> Graph:
    b = GB(f"g_{c.node}")
    ins = [b.input("data", c.data), b.input("ind", c.ind, c.ind_dtype)]
    if c.upd is not None:
        ins.append(b.input("upd", c.upd))
    b.op(c.op, ins, name=c.node, outs=["y"], **dict(c.attrs))
    return b.done("y")


@cache
def _compiled(c: Case) -> tuple[Graph, CompiledModel]:
    g = _graph(c)
    comp = compile_graph(g)
    return g, CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=2)


def _valid_feeds(c: Case, seed: int) -> dict[str, np.ndarray]:
    """Random valid indices along the checked axis (every other index column in range too), both signs."""
    rng = np.random.default_rng(seed)
    if c.valid is not None:
        ind = c.valid(rng, c.ind)
    elif c.op in _ND:  # the last axis of ind picks (axis 0, axis 1, ...) of data
        ind = np.stack([rng.integers(-c.data[j], c.data[j], c.ind[:-1]) for j in range(c.ind[-1])], axis=-1)
    else:
        ind = rng.integers(-c.n, c.n, c.ind)
        ind.reshape(-1)[:2] = (-c.n, c.n - 1)  # both ends of the range
    feeds = {"data": rng.standard_normal(c.data).astype(np.float32),
             "ind": ind.astype({"i64": np.int64, "i32": np.int32}[c.ind_dtype])}
    if c.upd is not None:
        feeds["upd"] = rng.standard_normal(c.upd).astype(np.float32)
    return feeds


def _with_bad(c: Case, feeds: dict[str, np.ndarray], value: int) -> dict[str, np.ndarray]:
    """``feeds`` with one index along the checked axis replaced by ``value``."""
    ind = feeds["ind"].copy()
    if c.op in _ND:
        ind[(len(ind) // 2, c.axis)] = value
    else:
        ind.reshape(-1)[ind.size // 2] = value
    return {**feeds, "ind": ind}


def _run(g: Graph, model: CompiledModel, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return model(*[feeds[n] for n in g.inputs])


def _message(c: Case) -> str:
    return re.escape(f"node {c.node!r} ({c.op}): an index is out of range for axis {c.axis} of size {c.n}") + "$"


@pytest.mark.parametrize("c", CASES, ids=lambda c: f"{c.op}-{dict(c.attrs).get('reduction', '')}{c.axis}")
def test_out_of_range_index_is_an_error_and_is_reset(c: Case) -> None:
    g, model = _compiled(c)
    feeds = _valid_feeds(c, 1)
    assert (feeds["ind"] < 0).any()
    assert_matches(_run(g, model, feeds), run_reference(g, feeds), ["y"])
    for bad in (c.n, -c.n - 1, 2**31 - 1 if c.ind_dtype == "i32" else 2**62):
        bad_feeds = _with_bad(c, feeds, bad)
        if not (bad < 0 and c.op in _ND):
            with pytest.raises(GraphError, match="out of"):  # the reference refuses it too
                run_reference(g, bad_feeds)
        with pytest.raises(ExecutionError, match=_message(c)):
            _run(g, model, bad_feeds)
        # the error word was reset: valid indices give the right answer again
        again = _valid_feeds(c, 2)
        assert_matches(_run(g, model, again), run_reference(g, again), ["y"])


@pytest.mark.parametrize("c", [c for c in CASES if c.op in _ND], ids=lambda c: c.op + str(c.attrs))
def test_nd_reference_refuses_a_too_negative_index(c: Case) -> None:
    with pytest.raises(GraphError, match="out of"):
        run_reference(_graph(c), _with_bad(c, _valid_feeds(c, 1), -c.n - 1))


def test_bad_index_met_by_any_pool_thread_is_reported() -> None:
    """A large lookup split over the pool's threads: a bad index in the first, a middle or the last chunk."""
    c = Case("Gather", (1000, 64), (64, 64), 0, 1000, attrs=(("axis", 0),))
    g, model = _compiled(c)
    assert model.num_threads == 2 and "tsr_parallel_for" in compile_graph(g).source
    feeds = _valid_feeds(c, 4)
    want = run_reference(g, feeds)
    for pos in (0, 64 * 32 + 5, 64 * 64 - 1):
        ind = feeds["ind"].copy()
        ind.reshape(-1)[pos] = 1000 + pos
        with pytest.raises(ExecutionError, match=_message(c)):
            model(feeds["data"], ind)
        assert_matches(_run(g, model, feeds), want, ["y"])


def test_checked_before_the_loop_when_invariant() -> None:
    """One row picked by a scalar index and fed to a MatMul (BERT's pooler): the check is made once,
    before the loops (which keep the code they have without checks), and still fails the run."""
    b = GB("g_pick")
    x, i = b.input("x", (1, 16, 32)), b.input("i", (), "i64")
    row = b.op("Gather", [x, i], name="pick", axis=1)
    b.op("MatMul", [row, b.randc("w", 32, 24)], outs=["y"])
    g = b.done("y")
    comp = compile_graph(g)
    assert "(void)tsr_index_check(" in comp.source
    model = CompiledModel(comp.library, comp.manifest, comp.weights, num_threads=2)
    xv = np.random.default_rng(5).standard_normal((1, 16, 32)).astype(np.float32)
    for k in (3, -1, -16, 15):
        assert_matches(model(xv, np.array(k)), run_reference(g, {"x": xv, "i": np.array(k)}), ["y"])
    for k in (16, -17):
        with pytest.raises(ExecutionError, match=re.escape("node 'pick' (Gather): an index is out of range for "
                                                           "axis 1 of size 16")):
            model(xv, np.array(k))


def test_artifact_round_trip_reports_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.cli import main
    from tessera.runtime.artifact import load_artifact, save_artifact

    c = CASES[0]
    g, model = _compiled(c)
    path = save_artifact(model, tmp_path / "gather.tsa")
    loaded = load_artifact(path, num_threads=2)
    feeds = _valid_feeds(c, 3)
    assert_matches(_run(g, loaded, feeds), run_reference(g, feeds), ["y"])
    bad = _with_bad(c, feeds, 1000)
    with pytest.raises(ExecutionError, match=_message(c)):
        _run(g, loaded, bad)
    assert_matches(_run(g, loaded, feeds), run_reference(g, feeds), ["y"])
    # the CLI: one error line, exit status 2
    for name, v in bad.items():
        np.save(tmp_path / f"{name}.npy", v)
    capsys.readouterr()
    assert main(["run", str(path), *(f"--input={n}={tmp_path / n}.npy" for n in bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.match("error: model .*" + _message(c), err), err


def test_embedding_through_tessera_compile_and_torch_compile() -> None:
    torch = pytest.importorskip("torch")
    import tessera
    from tessera.frontend.torch_importer import import_torch

    torch.manual_seed(0)
    emb = torch.nn.Embedding(5, 3).eval()
    weight = emb.weight.detach().numpy()
    # tessera.compile: the Gather of the embedding fails the run
    cm = tessera.compile(import_torch(emb, (torch.tensor([1, 2]),), input_names=["ids"]))
    np.testing.assert_array_equal(cm(np.array([1, 4]))[0], weight[[1, 4]])
    with pytest.raises(ExecutionError, match=r"\(Gather\): an index is out of range for axis 0 of size 5"):
        cm(np.array([1, 7]))
    np.testing.assert_array_equal(cm(np.array([0, 3]))[0], weight[[0, 3]])
    # torch.compile: the failed compiled run is re-run eagerly, which raises eager's IndexError
    compiled = torch.compile(emb, backend="tessera")
    with torch.no_grad():
        np.testing.assert_array_equal(compiled(torch.tensor([1, 2])).numpy(), weight[[1, 2]])
        with pytest.raises(IndexError, match="index out of range"):
            compiled(torch.tensor([1, 7]))
        np.testing.assert_array_equal(compiled(torch.tensor([4, 0])).numpy(), weight[[4, 0]])


def test_node_names_stay_out_of_workload_keys() -> None:
    """Two embedding lookups that differ only in node and value names are one tuning workload (the
    index check's message names no node; the compiled entry names it when a run fails)."""
    from tessera.tune.tasks import extract_tasks

    def lookup(node: str) -> Graph:
        b = GB(f"emb_{node}")
        ind = b.input(f"ids_{node}", (4,), "i64")
        y = b.op("Gather", [b.randc(f"table_{node}", 10, 8), ind], name=node, axis=0)
        return b.done(b.op("Relu", [y]))

    keys = [[t.key for t in extract_tasks(lookup(name))] for name in ("first", "second")]
    assert keys[0] and keys[0] == keys[1]
