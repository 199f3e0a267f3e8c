"""Expression algorithms have no recursion limit: 100,000-level expressions go through them all."""

from __future__ import annotations

from tessera.loop.expr import (
    BinOp,
    Call,
    Const,
    Expr,
    Load,
    Var,
    bounds,
    call,
    depth,
    free_vars,
    linear_form,
    same,
    simplify,
    substitute,
    to_str,
    transform,
    walk,
)
from tessera.loop.stages import build_stages
from tessera.loop.te import compute, placeholder, topo_order

N = 100_000


def _index_sum(n: int) -> Expr:
    i = Var("i")
    e: Expr = i
    for k in range(n):
        e = BinOp("add", e, i if k % 2 else Const(1), "i64")
    return e


def test_deep_index_expression() -> None:
    e = _index_sum(N)
    assert depth(e) == N + 1
    assert bounds(e, {"i": (0, 3)}) == (N // 2, N // 2 + 3 * (N // 2 + 1))
    lf = linear_form(e)
    assert lf == ({Var("i"): N // 2 + 1}, N // 2)
    assert free_vars(e) == {"i"}
    assert sum(1 for _ in walk(e)) == 2 * N + 1
    s = substitute(e, {"i": Const(2)})
    assert s == Const(N // 2 + 2 * (N // 2 + 1))  # folded bottom-up by the constructors
    text = to_str(e)
    assert text.startswith("(" * N) and text.count("i") == N // 2 + 1
    assert same(simplify(e, {"i": (0, 3)}), e)
    assert simplify((e * 4 + Var("j")) % 4, {"i": (0, 3), "j": (0, 3)}) == Var("j")


def test_deep_value_expression_and_shared_subtrees() -> None:
    x = Var("x", "f32")
    e: Expr = x
    for k in range(N):
        e = call("tanh", e) if k % 2 else BinOp("mul", e, Const(0.5, "f32"), "f32")
    assert depth(e) == N + 1
    # rewrite every tanh into exp: the rewritten tree is as deep, nothing recursed
    out = transform(e, lambda y: Call("exp", y.args, y.dtype) if isinstance(y, Call) else None)
    assert depth(out) == N + 1 and not same(out, e)
    assert sum(isinstance(y, Call) and y.fn == "exp" for y in walk(out)) == N // 2
    # a DAG of 60 doublings (2**60 paths) is rewritten once per shared node
    d: Expr = x
    for _ in range(60):
        d = BinOp("add", d, d, "f32")
    assert depth(d) == 61
    calls = []
    transform(d, lambda y: calls.append(y) or None)
    assert len(calls) == 61


def test_inlining_a_20000_tensor_chain() -> None:
    a = placeholder((8,), "f32", "a")
    t = a
    for _ in range(20_000):
        t = compute((8,), lambda i, s=t: call("tanh", s[i]), "t")
    assert len(topo_order([t])) == 20_001
    (stage,) = build_stages([t])
    assert depth(stage.body) == 20_002  # 20,000 tanh calls over one load of the placeholder
    loads = [y for y in walk(stage.body) if isinstance(y, Load)]
    assert len(loads) == 1 and loads[0].tensor is a


def test_evaluating_a_deep_expression() -> None:
    import numpy as np

    from tessera.loop.te_eval import evaluate_expr

    x = Var("x", "f32")
    e: Expr = x
    for k in range(N):
        e = BinOp("add", e, Const(1.0, "f32"), "f32") if k % 2 else call("tanh", e)
    xs = np.linspace(-2, 2, 5, dtype=np.float32)
    want = xs
    for k in range(N):
        want = (want + np.float32(1)) if k % 2 else np.tanh(want)
    np.testing.assert_allclose(evaluate_expr(e, {"x": xs}, {}), want, rtol=1e-6)
