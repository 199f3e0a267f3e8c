"""``torch.compile(..., backend="tessera")`` in training: forward and backward graphs are both
compiled by Tessera (through AOTAutograd) and training reaches eager's parameters; a graph
Tessera cannot compile runs eagerly with a warning, never without gradients; inference under
``no_grad`` / ``inference_mode`` is still compiled by Tessera."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tessera.dynamo_backend  # noqa: E402
from tests.test_dynamo_backend import _tessera_warnings, spy_compiles  # noqa: E402


@pytest.fixture
def spy(monkeypatch) -> Iterator[dict[str, list[Any]]]:
    yield from spy_compiles(monkeypatch)


def _mlp() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 3))


def _train(model: Any, params: Any, steps: int) -> list[list[Any]]:
    """SGD with momentum on fixed batches; the gradients of every step."""
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    grads = []
    for _ in range(steps):
        x, y = torch.randn(5, 8, generator=g), torch.randint(0, 3, (5,), generator=g)
        opt.zero_grad()
        out = model(x)
        assert out.requires_grad
        torch.nn.functional.cross_entropy(out, y).backward()
        grads.append([p.grad.clone() for p in params])
        opt.step()
    return grads


def _assert_same_training(model: Any, compiled: Any, ref: Any, steps: int = 4) -> None:
    grads = _train(compiled, list(model.parameters()), steps)
    ref_grads = _train(ref, list(ref.parameters()), steps)
    for step, (gs, rs) in enumerate(zip(grads, ref_grads, strict=True)):
        for g, r in zip(gs, rs, strict=True):
            np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-4, atol=1e-6, err_msg=f"step {step}")
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_training_compiles_forward_and_backward_and_matches_eager(spy) -> None:
    model = _mlp()
    ref = copy.deepcopy(model)
    compiled = torch.compile(model, backend="tessera")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _assert_same_training(model, compiled, ref, steps=4)
    assert not _tessera_warnings(record)
    fw, bw = spy["compiles"]  # the forward and the backward graph, each compiled once
    assert len(bw.output_names) == 6  # a gradient per parameter (the input needs none)
    assert len(spy["runs"]) == 2 * 4


def test_training_with_unsupported_op_falls_back_keeping_gradients(spy) -> None:
    class Spectral(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)
            self.head = torch.nn.Linear(5, 3)

        def forward(self, x: Any) -> Any:
            return self.head(torch.fft.rfft(self.fc(x)).abs())

    torch.manual_seed(0)
    model = Spectral()
    ref = copy.deepcopy(model)
    compiled = torch.compile(model, backend="tessera")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _assert_same_training(model, compiled, ref, steps=3)
    msgs = _tessera_warnings(record)
    # the forward graph keeps the complex spectrum for the backward graph: both run eagerly
    assert any("complex64 have no NumPy equivalent (in the forward graph)" in m for m in msgs), msgs
    assert any(m.endswith("(in the backward graph)") for m in msgs), msgs
    assert len(msgs) == len(set(msgs)) <= 2  # once per reason (forward, backward), not per step


def test_autograd_tracing_failure_falls_back_to_eager(spy, monkeypatch) -> None:
    def broken(**kwargs: Any) -> Any:
        def compiler(gm: Any, inputs: Any) -> Any:
            raise RuntimeError("aot tracing broke")
        return compiler

    monkeypatch.setattr(torch._dynamo.backends.common, "aot_autograd", broken)
    model = _mlp()
    ref = copy.deepcopy(model)
    compiled = torch.compile(model, backend="tessera")
    with pytest.warns(tessera.dynamo_backend.FallbackWarning,
                      match=r"internal error RuntimeError: aot tracing broke \(while tracing the graph for autograd\)"):
        _assert_same_training(model, compiled, ref, steps=2)
    assert spy["compiles"] == []


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_inference_modes_are_compiled_by_tessera(spy, mode: str) -> None:
    model = _mlp()
    compiled = torch.compile(model, backend="tessera")
    xs = [torch.randn(5, 8), torch.randn(5, 8)]
    ctx = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with ctx():
            outs = [compiled(x) for x in xs]
            refs = [model(x) for x in xs]
    assert not _tessera_warnings(record)
    (cm,) = spy["compiles"]  # one forward-only graph, no backward
    assert len(cm.output_names) == 1 and len(spy["runs"]) == 2
    for out, ref in zip(outs, refs, strict=True):
        assert not out.requires_grad
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_frozen_options_do_not_freeze_training(spy) -> None:
    """``freeze`` bakes parameters only into inference graphs: training still updates them."""
    model = _mlp()
    ref = copy.deepcopy(model)
    compiled = torch.compile(model, backend="tessera", options={"freeze": True})
    _assert_same_training(model, compiled, ref, steps=3)
    assert len(spy["compiles"]) == 2


def test_dynamic_shape_training_compiles_per_shape(spy) -> None:
    """Symbolic sizes: forward and backward are compiled on their first call, inside AOTAutograd's
    forward and the autograd engine's backward (the import runs outside their thread-local state)."""
    model = _mlp()
    ref = copy.deepcopy(model)
    compiled = torch.compile(model, backend="tessera", dynamic=True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for n in (2, 3, 5):
            x = torch.randn(n, 8)
            for m in (compiled, ref):
                m.zero_grad()
                m(x).square().sum().backward()
            for p, q in zip(model.parameters(), ref.parameters(), strict=True):
                np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert not _tessera_warnings(record)
    assert len(spy["compiles"]) == 6 and len(spy["runs"]) == 6  # forward and backward per batch size


def test_switching_grad_mode_and_requires_grad_keeps_gradients(spy) -> None:
    """A graph compiled for inference is not reused when gradients are wanted (Dynamo guards on the
    grad mode and on requires_grad): the grad-enabled call gets its own autograd graph."""
    model = _mlp()
    compiled = torch.compile(model, backend="tessera")
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert not compiled(x).requires_grad
    compiled(x).sum().backward()
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.grad = None
    ref(x).sum().backward()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-6)
    xg = x.clone().requires_grad_()
    compiled(xg).square().sum().backward()
    xr = x.clone().requires_grad_()
    ref(xr).square().sum().backward()
    np.testing.assert_allclose(xg.grad.numpy(), xr.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert len(spy["compiles"]) >= 5  # inference; forward + backward; and again with the input's gradient


def test_batch_norm_training_updates_running_statistics(spy) -> None:
    """Training-mode batch norm is compiled too: batch statistics in the forward graph, and the
    running mean and variance AOTAutograd writes back match eager's."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.BatchNorm1d(6, momentum=0.3), torch.nn.ReLU(),
                                torch.nn.Linear(6, 3)).train()
    ref = copy.deepcopy(model)
    compiled = torch.compile(model, backend="tessera")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _assert_same_training(model, compiled, ref, steps=3)
    assert not _tessera_warnings(record)
    for name, value in ref.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name].numpy(), value.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    assert int(model[1].num_batches_tracked) == 3
    assert len(spy["compiles"]) == 2 and len(spy["runs"]) == 6


def test_enable_grad_inside_no_grad_keeps_gradients(spy) -> None:
    """``torch.enable_grad()`` inside forward under a global ``no_grad``: the result requires grad as in
    eager (the graph is routed through AOTAutograd by what Dynamo traced, not only by the grad mode)."""
    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x: Any) -> Any:
            with torch.enable_grad():
                return torch.tanh(self.fc(x)) * 2

    torch.manual_seed(0)
    model = M()
    ref = copy.deepcopy(model)
    compiled = torch.compile(model, backend="tessera")
    x = torch.randn(3, 4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with torch.no_grad():
            out, want = compiled(x), ref(x)
        assert out.requires_grad and want.requires_grad
        out.sum().backward()
        want.sum().backward()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert not _tessera_warnings(record)
    assert len(spy["compiles"]) == 2  # forward and backward
