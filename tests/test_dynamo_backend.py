"""``torch.compile(..., backend="tessera")``: compiled results match eager, the compiled library
really runs, and graphs Tessera cannot handle fall back to eager with one warning."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tessera.compiler  # noqa: E402
from tessera.dynamo_backend import BackendOptionError, reset_fallback_warnings, tessera_backend  # noqa: E402


class _Net(torch.nn.Module):
    """Conv -> ReLU -> pool -> Linear, plus a second (elementwise) output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: Any) -> tuple[Any, Any]:
        h = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.fc(h), torch.sigmoid(x).sum()


class _Counted:
    """Delegates to a CompiledModel and counts how often the compiled library runs."""

    def __init__(self, cm: Any, runs: list[int]) -> None:
        self.cm, self.runs = cm, runs

    def __call__(self, *args: Any) -> Any:
        self.runs.append(1)
        return self.cm(*args)


def spy_compiles(monkeypatch: Any) -> Iterator[dict[str, list[Any]]]:
    """Record tessera.compile calls and runs of the models they return (from a clean Dynamo state)."""
    torch._dynamo.reset()
    reset_fallback_warnings()
    real = tessera.compiler.compile
    seen: dict[str, list[Any]] = {"compiles": [], "runs": []}

    def fake(*args: Any, **kwargs: Any) -> Any:
        cm = real(*args, **kwargs)
        seen["compiles"].append(cm)
        return _Counted(cm, seen["runs"])

    monkeypatch.setattr(tessera.compiler, "compile", fake)
    yield seen
    torch._dynamo.reset()


@pytest.fixture
def spy(monkeypatch) -> Iterator[dict[str, list[Any]]]:
    yield from spy_compiles(monkeypatch)


def _tessera_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if str(w.message).startswith("tessera:")]


def test_backend_registered_by_entry_point() -> None:
    assert "tessera" in torch._dynamo.list_backends()


def test_compiled_matches_eager_and_runs_compiled_code(spy) -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    compiled = torch.compile(net, backend="tessera")
    xs = [torch.randn(2, 3, 9, 9), torch.randn(2, 3, 9, 9)]
    with warnings.catch_warnings(record=True) as record, torch.no_grad():
        warnings.simplefilter("always")
        outs = [compiled(x) for x in xs]
    assert not _tessera_warnings(record)
    assert len(spy["compiles"]) == 1 and len(spy["runs"]) == 2
    for x, (logits, total) in zip(xs, outs, strict=True):
        ref_logits, ref_total = net(x)
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5) and total.shape == ()
        np.testing.assert_allclose(logits.numpy(), ref_logits.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(total.numpy(), ref_total.detach().numpy(), rtol=1e-4)


def test_freeze_bakes_parameters(spy) -> None:
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    compiled = torch.compile(mlp, backend="tessera", options={"freeze": True})
    x = torch.randn(3, 16)
    with torch.no_grad():
        np.testing.assert_allclose(compiled(x).numpy(), mlp(x).numpy(), rtol=1e-4, atol=1e-5)
    (cm,) = spy["compiles"]
    assert [tuple(s.shape) for s in cm.input_specs] == [(3, 16)]  # parameters are constants, not inputs
    assert len(spy["runs"]) == 1


def test_dynamic_shapes_recompile_per_shape(spy) -> None:
    def f(x: Any) -> Any:
        return torch.tanh(x * 2).reshape(x.shape[0], -1)

    compiled = torch.compile(f, backend="tessera", dynamic=True)
    for n in (3, 5, 3):
        x = torch.randn(n, 2, 4)
        np.testing.assert_allclose(compiled(x).numpy(), f(x).numpy(), rtol=1e-5, atol=1e-6)
    assert sorted(tuple(cm.input_specs[0].shape) for cm in spy["compiles"]) == [(3, 2, 4), (5, 2, 4)]
    assert len(spy["runs"]) == 3


def test_unsupported_op_falls_back_with_one_warning(spy) -> None:
    def f(x: Any) -> Any:
        return torch.fft.rfft(x).abs() + 1.0

    compiled = torch.compile(f, backend="tessera")
    xs = [torch.randn(4, 16), torch.randn(4, 16)]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        outs = [compiled(x) for x in xs]
    msgs = _tessera_warnings(record)
    assert len(msgs) == 1, msgs
    assert "falling back to eager" in msgs[0] and "fft" in msgs[0]
    assert spy["compiles"] == [] and spy["runs"] == []
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_allclose(out.numpy(), f(x).numpy(), rtol=1e-5)


def test_input_mutation_falls_back(spy) -> None:
    def f(x: Any) -> Any:
        x.mul_(3)
        return x + 1

    compiled = torch.compile(f, backend="tessera")
    x = torch.ones(4)
    with pytest.warns(UserWarning, match="in place"):
        out = compiled(x)
    np.testing.assert_array_equal(x.numpy(), np.full(4, 3, np.float32))  # the mutation still happened
    np.testing.assert_array_equal(out.numpy(), np.full(4, 4, np.float32))
    assert spy["compiles"] == []


@pytest.mark.parametrize(("options", "message"), [
    ({"bogus": 1, "threads": 2}, r"unknown tessera backend option\(s\) 'bogus', 'threads'; "
                                 r"valid options: target, num_threads, freeze"),
    ({"num_threads": "4"}, r"'num_threads' must be a positive int or None, got '4'"),
    ({"num_threads": 0}, r"'num_threads' must be a positive int or None, got 0"),
    ({"num_threads": True}, r"'num_threads' must be a positive int or None, got True"),
    ({"freeze": "yes"}, r"'freeze' must be a bool, got 'yes'"),
    ({"target": 5}, r"'target' must be a target name or path, got 5"),
    ({"target": "no-such-cpu"}, r"'target': unknown target 'no-such-cpu'; built-in targets: "),
    (["freeze"], r"options must be a dict, got list"),
])
def test_bad_options_rejected(options: Any, message: str) -> None:
    gm = torch.fx.symbolic_trace(torch.nn.ReLU())
    with pytest.raises(BackendOptionError, match=message):
        tessera_backend(gm, [torch.randn(2)], options=options)


def test_compile_mode_rejected_default_accepted(spy) -> None:
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed,
                       match=r"the tessera backend has no compile modes \(mode='max-autotune'\)") as info:
        torch.compile(lambda x: x + 1, backend="tessera", mode="max-autotune")(torch.randn(3))
    assert isinstance(info.value.inner_exception, BackendOptionError)
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(lambda x: x + 1, backend="tessera", mode="default")(torch.ones(3))
    np.testing.assert_array_equal(out.numpy(), np.full(3, 2, np.float32))
    assert len(spy["runs"]) == 1


def test_bad_option_surfaces_through_torch_compile(spy) -> None:
    compiled = torch.compile(lambda x: x + 1, backend="tessera", options={"bogus": 1})
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match="unknown tessera backend option") as info:
        compiled(torch.randn(3))
    assert isinstance(info.value.inner_exception, BackendOptionError)
    assert spy["compiles"] == []
