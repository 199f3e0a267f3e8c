"""PyTorch frontend: torch.export -> core ATen -> Tessera graph, checked against eager PyTorch."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from tessera.errors import GraphError, InputCountError, ModelLoadError, UnsupportedOperatorError  # noqa: E402
from tessera.frontend.torch_importer import import_torch, supported_aten_ops  # noqa: E402
from tessera.graph.reference import run_reference  # noqa: E402
from tessera.graph.symbolic import Sym  # noqa: E402
from tessera.graph.verify import verify  # noqa: E402

RTOL = 1e-4  # max |tessera - eager| / max |eager|


def _eager(module: nn.Module, *inputs: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().numpy() for o in outs]


def _check(g, module: nn.Module, *inputs: torch.Tensor, exact: bool = False) -> None:
    want = _eager(module, *inputs)
    got = list(run_reference(g, [x.numpy() for x in inputs]).values())
    assert len(got) == len(want)
    for w, o in zip(want, got, strict=True):
        assert o.dtype == w.dtype, (o.dtype, w.dtype)
        assert o.shape == w.shape
        if exact or w.dtype.kind in "biu":
            np.testing.assert_array_equal(o, w)
        else:
            scale = float(np.max(np.abs(w))) or 1.0
            diff = float(np.max(np.abs(o.astype(np.float64) - w.astype(np.float64)), initial=0.0))
            assert diff / scale <= RTOL, f"relative diff {diff / scale:.3g}"


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(x)))
        y = F.max_pool2d(y, 2)
        y = F.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.head(y)


class TinyBlock(nn.Module):
    """A pre-norm causal transformer block with an attention mask input."""

    def __init__(self, dim: int = 32, heads: int = 4, vocab: int = 50) -> None:
        super().__init__()
        self.heads = heads
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(64, dim)
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, s = ids.shape
        pos = torch.arange(s, device=ids.device)
        x = self.emb(ids) + self.pos(pos)[None]
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(x.shape[-1], dim=-1)
        q, k, v = (t.view(b, s, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        causal = torch.ones(s, s, dtype=torch.bool).tril()
        keep = causal[None, None] & (mask[:, None, None, :] > 0)
        att = att.masked_fill(~keep, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, -1)
        x = x + self.proj(y)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))
        return x, x.mean(dim=1)


def test_conv_bn_relu_matches_eager_with_symbolic_batch() -> None:
    torch.manual_seed(0)
    m = ConvBnRelu().eval()
    g = import_torch(m, (torch.randn(1, 3, 16, 16),), input_names=["image"],
                     dynamic_axes={"image": {0: "batch"}})
    assert g.inputs == ["image"]
    assert g.types["image"].shape == (Sym.var("batch"), 3, 16, 16)
    assert g.types[g.outputs[0]].shape == (Sym.var("batch"), 5)
    assert {"Conv", "BatchNormalization", "Relu", "MaxPool", "Gemm"} <= set(g.op_histogram())
    for batch in (1, 3):
        _check(g, m, torch.randn(batch, 3, 16, 16))


def test_static_import_has_static_shapes() -> None:
    torch.manual_seed(0)
    m = ConvBnRelu().eval()
    g = import_torch(m, (torch.randn(2, 3, 16, 16),))
    assert g.inputs == ["x"]  # named after forward's parameter
    assert g.types["x"].shape == (2, 3, 16, 16)
    assert g.types[g.outputs[0]].is_static
    _check(g, m, torch.randn(2, 3, 16, 16))


def test_tiny_transformer_block_symbolic_batch_and_seq() -> None:
    torch.manual_seed(0)
    m = TinyBlock().eval()
    ids = torch.randint(0, 50, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.int64)
    g = import_torch(m, (ids, mask), input_names=["ids", "mask"], output_names=["hidden", "pooled"],
                     dynamic_axes={"ids": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}})
    batch, seq = Sym.var("batch"), Sym.var("seq")
    assert g.outputs == ["hidden", "pooled"]
    assert g.types["ids"].shape == (batch, seq)
    assert g.types["hidden"].shape == (batch, seq, 32)
    assert g.types["pooled"].shape == (batch, 32)
    verify(g)
    gen = torch.Generator().manual_seed(1)
    for b, s in ((1, 12), (3, 7), (2, 20)):
        ids = torch.randint(0, 50, (b, s), generator=gen)
        mask = torch.ones(b, s, dtype=torch.int64)
        mask[0, s // 2:] = 0
        _check(g, m, ids, mask)


class Mixed(nn.Module):
    """Integer/float mixing: the result dtypes must follow torch's type promotion."""

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = (idx * 2 + 1) / 3  # int / int -> float32
        b = (x > 0.25).sum(dim=1)  # bool sum -> int64
        c = torch.where(x > 0, x, 0)  # scalar other
        d = idx // 2 - idx % 3  # integer floor division, modulo
        e = x.cumsum(dim=1) + torch.arange(x.shape[1])  # int arange promoted to float
        f = x.masked_fill(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)[: x.shape[0]], -1.5)
        g = (idx.to(torch.float32) - x).floor_divide(0.75)
        h = (x != 0.5) & (idx > 1) | (idx == 0)
        return a, b, c, d, e, f, g, h


def test_type_promotion_and_integer_ops() -> None:
    x = torch.randn(4, 4)
    idx = torch.tensor([[-5, 0, 3, 7]] * 4, dtype=torch.int64)
    g = import_torch(Mixed(), (x, idx))
    _check(g, Mixed(), x, idx)
    dtypes = [g.types[o].dtype.name for o in g.outputs]
    assert dtypes == ["float32", "int64", "float32", "int64", "float32", "float32", "float32", "bool"]


class _Fn(nn.Module):
    def __init__(self, fn, *params: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        self.params = nn.ParameterList([nn.Parameter(p, requires_grad=False) for p in params])

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs, *self.params)


def _r(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


OP_CASES = {
    "activations": (lambda x: torch.cat([F.silu(x), F.hardtanh(x, -0.5, 0.5), F.hardswish(x),
                                         F.hardsigmoid(x), F.leaky_relu(x, 0.1), F.elu(x),
                                         F.softplus(x), F.softplus(x * 10, beta=2.0), torch.sigmoid(x),
                                         torch.tanh(x), F.gelu(x), F.relu6(x), F.mish(x)], dim=1),
                    (_r(2, 5),)),
    "math": (lambda x: torch.stack([torch.rsqrt(x.abs() + 1), torch.exp(x), torch.log(x.abs() + 0.1),
                                    x.pow(3), torch.sqrt(x.abs()), x.clamp(-0.3, 0.4), x.clamp(min=0.1),
                                    torch.erf(x), x.reciprocal(), torch.trunc(x * 3), x.sign(),
                                    torch.log1p(x.abs()), torch.expm1(x), torch.maximum(x, -x * 0.5),
                                    torch.remainder(x * 5, 1.5), torch.fmod(x * 5, 1.5)]),
             (_r(3, 4),)),
    "reductions": (lambda x: torch.cat([x.amax(dim=1).flatten(), x.mean(dim=(0, 2), keepdim=True).flatten(),
                                        x.var(dim=2).flatten(), x.sum().reshape(1), x.max(dim=0).values.flatten(),
                                        x.argmax(dim=2).flatten().float(), torch.linalg.vector_norm(x, dim=1)
                                        .flatten(), x.amin(dim=-1).flatten(), x.std(dim=1).flatten(),
                                        x.prod(dim=2).flatten(), x.norm(p=1, dim=0).flatten()]),
                   (_r(2, 3, 4),)),
    "softmax": (lambda x: torch.cat([x.softmax(-1), x.log_softmax(1), x.softmax(0)]), (_r(3, 6),)),
    "shapes": (lambda x: torch.cat([x.permute(2, 0, 1).reshape(4, -1), x.transpose(0, 2).reshape(4, -1),
                                    x[:, 1:, ::2].reshape(4, -1)[:, :3].repeat(1, 2),
                                    x.unsqueeze(1).expand(2, 2, 3, 4).reshape(4, -1)[:, :6],
                                    x[1, 2:].reshape(4, -1), x.select(2, 3).reshape(2, 3).repeat(2, 1),
                                    torch.flip(x, dims=[0]).reshape(4, -1)[:, :6]], dim=1),
               (_r(2, 3, 4),)),
    "split_unbind": (lambda x: (*x.split([1, 3], dim=1), *x.chunk(2, dim=0), *x.unbind(2)),
                     (_r(4, 4, 2),)),
    "indexing": (lambda x, i: torch.cat([x.index_select(1, i), torch.gather(x, 1, i.expand(3, 2)),
                                         x[i, :2].T, x[:, i]], dim=0),
                 (_r(3, 4), torch.tensor([2, 0]))),
    "pad_pool": (lambda x: torch.cat([F.avg_pool2d(F.pad(x, (1, 1, 2, 0), value=0.5), 2).flatten(1),
                                      F.adaptive_avg_pool2d(x, 2).flatten(1),
                                      F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
                                      .flatten(1),
                                      F.interpolate(x, scale_factor=2, mode="nearest").flatten(1),
                                      F.interpolate(x, size=(6, 6), mode="bilinear").flatten(1)], dim=1),
                 (_r(2, 3, 4, 4),)),
    "norms_convs": (lambda x, w, wt: torch.cat([F.group_norm(x, 2).flatten(1),
                                                F.conv2d(x, w, padding=1, groups=2, dilation=1).flatten(1),
                                                F.conv_transpose2d(x, wt, stride=2).flatten(1),
                                                F.layer_norm(x, [4, 4]).flatten(1)], dim=1),
                    (_r(2, 4, 4, 4),), _r(6, 2, 3, 3, seed=1), _r(4, 3, 2, 2, seed=2)),
    "matmuls": (lambda x, w, bias: torch.cat([torch.baddbmm(bias, x, w, alpha=0.5, beta=2.0).flatten(1),
                                              (x @ w).flatten(1), F.linear(x[0], w[0].T, bias[0, 0]).flatten()
                                              .expand(2, -1)], dim=1),
                (_r(2, 3, 4),), _r(2, 4, 5, seed=1), _r(2, 1, 5, seed=2)),
    "creation": (lambda x: torch.cat([torch.zeros_like(x), torch.full_like(x, 2.5), x.new_ones(x.shape),
                                      torch.tril(x, -1), torch.triu(x, 1), torch.eye(x.shape[0])]), (_r(3, 3),)),
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_aten_op_coverage(case: str) -> None:
    fn, inputs, *params = OP_CASES[case]
    m = _Fn(fn, *params).eval()
    g = import_torch(m, inputs)
    _check(g, m, *inputs)


def test_dynamic_index_and_slicing_with_symbolic_sizes() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            b, s = mask.shape
            rows = torch.arange(b)[:, None, None]
            cols = torch.arange(s)[None, None, :]
            m = mask.bool()[rows, cols]  # advanced indexing with broadcast index tensors
            half = x[:, : s // 2]  # symbolic slice end
            return m.float().sum(-1) + half.sum(1, keepdim=True)[..., 0] + x.new_zeros(b, 1)

    m = M()
    x, mask = _r(2, 6), torch.tensor([[1, 1, 0, 1, 0, 0], [1, 0, 1, 1, 1, 1]])
    g = import_torch(m, (x, mask), dynamic_axes={"x": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}})
    assert g.types["x"].shape == (Sym.var("batch"), Sym.var("seq"))
    _check(g, m, x, mask)
    _check(g, m, _r(3, 9, seed=4), torch.randint(0, 2, (3, 9), generator=torch.Generator().manual_seed(5)))


class Unsupported(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft(x).abs()
        return torch.special.bessel_j0(x) + spec[..., :1] + torch.special.bessel_j0(x * 2)


def test_unsupported_ops_are_reported_together() -> None:
    with pytest.raises(UnsupportedOperatorError) as info:
        import_torch(Unsupported(), (torch.randn(2, 8),))
    ops = {op.op_type: op for op in info.value.ops}
    assert set(ops) == {"aten._fft_r2c.default", "aten.special_bessel_j0.default"}
    assert ops["aten.special_bessel_j0.default"].count == 2
    assert all(op.source == "torch.export of Unsupported" for op in ops.values())
    assert "2 unsupported operator type(s), 3 node(s)" in str(info.value)
    assert "aten.convolution.default" in supported_aten_ops()


def test_wrong_input_count_and_names() -> None:
    m = ConvBnRelu().eval()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(InputCountError):
        import_torch(m, (x, x))
    with pytest.raises(InputCountError):
        import_torch(m, ())
    with pytest.raises(InputCountError, match="input name"):
        import_torch(m, (x,), input_names=["a", "b"])
    with pytest.raises(InputCountError, match="unknown input"):
        import_torch(m, (x,), dynamic_axes={"nope": {0: "batch"}})


def test_axis_fixed_by_the_model_is_imported_static() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("bias", torch.arange(8.0).reshape(2, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.bias  # forces x.shape[0] to broadcast against 2

    x = torch.randn(2, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = import_torch(M(), (x,), dynamic_axes={"x": {0: "batch"}})
    assert any("fixed by the model" in str(w.message) for w in caught)
    assert g.types["x"].shape == (2, 4)
    _check(g, M(), x)


def test_outputs_that_alias_inputs_or_repeat() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            y = x * 2
            return x, y, y

    g = import_torch(M(), (torch.randn(3),), output_names=["same", "twice", "again"])
    verify(g)
    assert g.outputs == ["same", "twice", "again"]
    _check(g, M(), torch.randn(3))


def test_non_module_is_rejected() -> None:
    with pytest.raises(Exception, match="torch.nn.Module"):
        import_torch(lambda x: x, (torch.randn(2),))  # type: ignore[arg-type]


def test_translation_error_names_the_fx_node() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(x, 2, divisor_override=3)

    with pytest.raises(GraphError, match="avg_pool2d"):
        import_torch(M(), (torch.randn(1, 1, 4, 4),))


def test_input_mutation_is_an_error_not_dropped() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x.mul_(2)
            return x + 1

    with pytest.raises(GraphError, match="the model writes into its input 'x' in place"):
        import_torch(M(), (torch.ones(2),))


def test_buffer_mutation_is_imported_as_the_value_with_a_warning() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("count", torch.full((2,), 3.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.count.add_(1)
            return x + self.count

    m = M()
    with pytest.warns(UserWarning, match="updates buffer 'count' in place; the imported graph keeps its value"):
        g = import_torch(m, (torch.ones(2),))
    (out,) = run_reference(g, {"x": np.ones(2, np.float32)}).values()
    np.testing.assert_array_equal(out, np.full(2, 5, np.float32))  # 1 + (3 + 1): the update within the call


def test_item_of_a_scalar_tensor_is_used_as_a_scalar() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return x * s.item() + s.item()

    x, s = torch.randn(2, 3), torch.tensor(2.5, dtype=torch.float64)
    g = import_torch(M(), (x, s))
    _check(g, M(), x, s)
    _check(g, M(), torch.randn(2, 3), torch.tensor(-4.0, dtype=torch.float64))  # the value is an input


def test_decomposition_failure_is_a_model_load_error(monkeypatch) -> None:
    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NameError("name 'L' is not defined")

    monkeypatch.setattr(torch.export.ExportedProgram, "run_decompositions", broken)
    with pytest.raises(ModelLoadError, match=r"decomposing the torch.export of ReLU failed: NameError: name 'L'"):
        import_torch(nn.ReLU(), (torch.randn(2),))
