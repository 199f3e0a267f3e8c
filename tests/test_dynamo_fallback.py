"""``torch.compile(..., backend="tessera")`` never fails a call for Tessera's own reasons: graph
breaks recompile cleanly, a failure in any stage of the backend runs that graph eagerly with one
warning per distinct reason, errors of the model's own surface unchanged, and the inputs and
outputs a careless user passes (scalars, empty, strided, int64, dicts, changing shapes) give eager's results."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tessera.compiler  # noqa: E402
import tessera.dynamo_backend  # noqa: E402
from tessera.errors import CompileError  # noqa: E402
from tessera.runtime.compiled_model import ExecutionError  # noqa: E402
from tests.test_dynamo_backend import _tessera_warnings, spy_compiles  # noqa: E402


@pytest.fixture
def spy(monkeypatch) -> Iterator[dict[str, list[Any]]]:
    yield from spy_compiles(monkeypatch)


class _ItemBranch(torch.nn.Module):
    """The reported model: ``.item()`` in forward is a graph break, and its branch makes Dynamo
    compile the resumed code once per side (the second compile used to raise NameError: name 'L')."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: Any) -> Any:
        h = self.fc(x)
        if x.sum().item() > 0:
            return h * 2
        return h - 1


def _inputs(n: int) -> list[Any]:
    """Inputs whose sums alternate in sign, so both sides of the branch run."""
    g = torch.Generator().manual_seed(0)
    return [torch.rand(2, 4, generator=g) * (1 if i % 2 == 0 else -1) for i in range(n)]


def _close(out: Any, ref: Any) -> None:
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_graph_break_model_is_compiled_by_tessera_on_every_call(spy, grad: bool) -> None:
    torch.manual_seed(0)
    model = _ItemBranch()
    compiled = torch.compile(model, backend="tessera")
    with warnings.catch_warnings(record=True) as record, torch.set_grad_enabled(grad):
        warnings.simplefilter("always")
        for x in _inputs(8):
            out = compiled(x)
            _close(out, model(x))
            assert out.requires_grad == grad
    assert not _tessera_warnings(record)
    # fc + sum, then each side of the branch (Dynamo may recompile one as dynamic): Tessera ran every graph
    assert len(spy["compiles"]) >= 3 and len(spy["runs"]) == 16


def _raise(exc: BaseException) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc
    return fail


class _FailsOnRun:
    def __call__(self, *args: Any) -> Any:
        raise ExecutionError("model 'x': tsr_run failed with status 3")


# Each stage of the backend fails in turn (as a Tessera error or as a bug): eager takes over.
_STAGES = {
    "torch.export": ("torch.export.export", RuntimeError("export broke"), "torch.export of DynamoGraph failed"),
    "decomposition": ("torch.export.ExportedProgram.run_decompositions", NameError("name 'L' is not defined"),
                      "decomposing the torch.export of DynamoGraph failed: NameError: name 'L' is not defined"),
    "translation": ("tessera.frontend.torch_importer._translate", KeyError("meta"), "internal error KeyError"),
    "compile": ("tessera.compiler.compile", CompileError("gcc rejected kernel k0"), "gcc rejected kernel k0"),
    "runner": ("tessera.compiler.compile", OSError("cannot load library t.so"),
               "internal error OSError: cannot load library t.so"),
    "first run": ("tessera.compiler.compile", None, "tsr_run failed with status 3"),
}


@pytest.mark.parametrize("stage", list(_STAGES))
def test_failure_in_any_stage_falls_back_with_one_warning(monkeypatch, stage: str) -> None:
    torch._dynamo.reset()
    tessera.dynamo_backend.reset_fallback_warnings()
    target, exc, reason = _STAGES[stage]
    monkeypatch.setattr(target, _raise(exc) if exc is not None else lambda *a, **k: _FailsOnRun())
    torch.manual_seed(0)
    model = _ItemBranch()
    compiled = torch.compile(model, backend="tessera")
    with warnings.catch_warnings(record=True) as record, torch.no_grad():
        warnings.simplefilter("always")
        for x in _inputs(10):
            _close(compiled(x), model(x))
    msgs = _tessera_warnings(record)
    assert len(msgs) == 1, msgs  # three graphs fail for the same reason, ten calls: one warning
    assert msgs[0].startswith("tessera: falling back to eager for this graph: ") and reason in msgs[0]
    torch._dynamo.reset()


def test_distinct_reasons_warn_once_each(spy) -> None:
    def f(x: Any) -> Any:
        y = torch.fft.rfft(x).abs()  # unsupported operator
        torch._dynamo.graph_break()
        return y.to(torch.bfloat16) * 2  # no NumPy dtype

    compiled = torch.compile(f, backend="tessera")
    with warnings.catch_warnings(record=True) as record, torch.no_grad():
        warnings.simplefilter("always")
        for _ in range(4):
            x = torch.randn(3, 8)
            torch.testing.assert_close(compiled(x), f(x))
    msgs = _tessera_warnings(record)
    assert len(msgs) == 2, msgs
    assert "aten._fft_r2c.default" in msgs[0] and "outputs of dtype torch.bfloat16 have no NumPy" in msgs[1]


@pytest.mark.parametrize("use", ["item", "float argument"])
def test_scalars_read_with_item_are_compiled(spy, use: str) -> None:
    """``.item()`` feeding arithmetic (and Python floats, which Dynamo passes as 0-d tensors read back
    with ``.item()`` inside the graph) compile with Tessera, for every value."""
    torch.manual_seed(0)
    fc = torch.nn.Linear(4, 4)

    def f(x: Any, k: float = 0.0) -> Any:
        return fc(x) * (x.sum().item() if use == "item" else k)

    compiled = torch.compile(f, backend="tessera")
    with warnings.catch_warnings(record=True) as record, torch.no_grad():
        warnings.simplefilter("always")
        for i, x in enumerate(_inputs(6)):
            _close(compiled(x, 0.5 + i), f(x, 0.5 + i))
    assert not _tessera_warnings(record)
    # .item() breaks the graph (x.sum(), then the rest): two compiled graphs per call
    assert spy["compiles"] and len(spy["runs"]) == (12 if use == "item" else 6)


def test_models_own_errors_surface_unchanged(spy) -> None:
    def checked(x: Any) -> Any:
        if x.sum() > 0:
            raise ValueError("inputs must not sum above zero")
        return x * 2

    def bad_matmul(x: Any, w: Any) -> Any:
        return torch.relu(x) @ w

    compiled = torch.compile(checked, backend="tessera")
    with warnings.catch_warnings(record=True) as record, torch.no_grad():
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="^inputs must not sum above zero$"):
            compiled(torch.ones(3))
        np.testing.assert_array_equal(compiled(-torch.ones(3)).numpy(), np.full(3, -2, np.float32))
        errors = []
        for backend in ("eager", "tessera"):  # the same error as with torch.compile's own eager backend
            torch._dynamo.reset()
            with pytest.raises(Exception, match="must have same reduction dim") as info:
                torch.compile(bad_matmul, backend=backend)(torch.randn(2, 3), torch.randn(4, 5))
            errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1]
    assert not _tessera_warnings(record)
    assert len(spy["runs"]) == 3  # x.sum() on both calls, x * 2 on the second


def test_too_many_signatures_fall_back(spy, monkeypatch) -> None:
    monkeypatch.setattr(tessera.dynamo_backend, "MAX_SIGNATURES", 2)

    def f(x: Any) -> Any:
        return torch.tanh(x) + 1

    compiled = torch.compile(f, backend="tessera", dynamic=True)
    with warnings.catch_warnings(record=True) as record, torch.no_grad():
        warnings.simplefilter("always")
        for n in (2, 3, 4, 5, 2):
            x = torch.randn(n)
            _close(compiled(x), f(x))
    msgs = _tessera_warnings(record)
    assert len(msgs) == 1 and "more than 2 distinct input signatures" in msgs[0], msgs
    assert len(spy["compiles"]) == 2


def _view_of_input(x: Any) -> Any:
    return x.view(-1)


# (name, function, calls): every call's result must equal eager's, compiled by Tessera, no warning
_CARELESS = [
    ("non-tensor outputs", lambda x: (x + 1, 3, "s", None), [(torch.randn(3),)]),
    ("dict and nested outputs", lambda x: {"a": x * 2, "b": (x - 1, x.sum())}, [(torch.randn(3),)]),
    ("input returned", lambda x: (x, x + 1), [(torch.randn(3),)]),
    ("view of input returned", _view_of_input, [(torch.randn(2, 3),)]),
    ("python int argument", lambda x, k: x * k + k, [(torch.randn(3), 2), (torch.randn(3), 3), (torch.randn(3), 4)]),
    ("0-d tensor", lambda x: x * 2 + 1, [(torch.tensor(3.0),)]),
    ("empty tensors", lambda x: torch.relu(x).sum(0) + 1, [(torch.randn(0, 4),), (torch.randn(0, 4),)]),
    ("non-contiguous inputs", lambda x: x * 2 + 1, [(torch.randn(4, 6).t(),), (torch.randn(4, 6)[:, ::2],)]),
    ("int64 inputs", lambda x: x * 3 + x // 2, [(torch.arange(10),), (torch.arange(10) - 5,)]),
    ("int64 index", lambda x, i: x[i] * 2, [(torch.randn(5, 3), torch.tensor([0, 4, 2]))]),
    ("bool outputs", lambda x: (x > 0) & (x < 1), [(torch.randn(5),)]),
    ("changing shapes", lambda x: torch.tanh(x).sum(-1),
     [(torch.randn(2, 3),), (torch.randn(4, 3),), (torch.randn(5, 7),), (torch.randn(2, 3),)]),
]


@pytest.mark.parametrize(("fn", "calls"), [c[1:] for c in _CARELESS], ids=[c[0] for c in _CARELESS])
def test_careless_inputs_and_outputs_match_eager(spy, fn: Any, calls: list[tuple[Any, ...]]) -> None:
    compiled = torch.compile(fn, backend="tessera")
    with warnings.catch_warnings(record=True) as record, torch.no_grad():
        warnings.simplefilter("always")
        for args in calls:
            out, ref = compiled(*args), fn(*args)
            torch.utils._pytree.tree_map(
                lambda a, b: torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
                if isinstance(a, torch.Tensor) else (a == b) or pytest.fail(f"{a!r} != {b!r}"), out, ref)
    assert not _tessera_warnings(record)
    assert spy["compiles"] and len(spy["runs"]) == len(calls)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.complex64])
def test_dtypes_without_numpy_equivalent_fall_back(spy, dtype: Any) -> None:
    def f(x: Any) -> Any:
        return x * 2

    compiled = torch.compile(f, backend="tessera")
    x = torch.randn(3, dtype=dtype)
    with pytest.warns(tessera.dynamo_backend.FallbackWarning, match=f"dtype {dtype} have no NumPy equivalent"):
        torch.testing.assert_close(compiled(x), f(x))
    assert spy["compiles"] == []
