"""Direct NumPy evaluation of tensor expressions: the oracle that checks compute
definitions against the registry's reference implementations (tests only; not fast)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from tessera.loop.expr import BinOp, Call, Cast, Const, Expr, Load, Reduce, Select, Var, children
from tessera.loop.te import Tensor, topo_order

_NP_DTYPES = {"f64": np.float64, "f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16,
              "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64, "u8": np.uint8,
              "u16": np.uint16, "u32": np.uint32, "u64": np.uint64, "bool": np.bool_}

_erf = np.frompyfunc(math.erf, 1, 1)

CALLS: dict[str, Any] = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x), "tanh": np.tanh,
    "erf": lambda x: _erf(x).astype(x.dtype) if hasattr(x, "dtype") else math.erf(x),
    "abs": np.abs, "neg": np.negative, "floor": np.floor, "ceil": np.ceil, "round": np.round,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "sinh": np.sinh, "cosh": np.cosh, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "log1p": np.log1p, "expm1": np.expm1,
    "sign": np.sign, "not": np.logical_not, "isnan": np.isnan, "isinf": np.isinf,
    "pow": np.power, "fmod": np.fmod, "atan2": np.arctan2,
    "bitand": np.bitwise_and, "bitor": np.bitwise_or, "bitxor": np.bitwise_xor, "bitnot": np.invert,
    "shl": np.left_shift, "shr": np.right_shift, "xor": np.logical_xor,
}


def np_dtype(name: str) -> np.dtype:
    return np.dtype(_NP_DTYPES[name])


def _binop(op: str, a: Any, b: Any, dtype: str) -> Any:
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        if dtype in ("f64", "f32", "f16", "bf16"):
            return a / b
        return np.trunc(np.asarray(a, np.float64) / b).astype(np_dtype(dtype))
    if op == "floordiv":
        return np.floor_divide(a, b)
    if op == "mod":
        return np.mod(a, b)
    if op == "min":
        return np.minimum(a, b)
    if op == "max":
        return np.maximum(a, b)
    if op == "pow":
        return np.power(a, b)
    if op == "lt":
        return np.less(a, b)
    if op == "le":
        return np.less_equal(a, b)
    if op == "eq":
        return np.equal(a, b)
    if op == "ne":
        return np.not_equal(a, b)
    if op == "and":
        return np.logical_and(a, b)
    if op == "or":
        return np.logical_or(a, b)
    raise ValueError(f"unknown binary op {op!r}")


def _eval(e: Expr, env: dict[str, np.ndarray], values: Mapping[int, np.ndarray]) -> Any:
    """Value of ``e``: post-order with an explicit stack (any depth); a child's array is dropped
    as soon as its last parent is computed. Floating-point warnings are off (NaN/inf are values)."""
    with np.errstate(all="ignore"):
        return _eval_postorder(e, env, values)


def _eval_postorder(e: Expr, env: dict[str, np.ndarray], values: Mapping[int, np.ndarray]) -> Any:
    uses: dict[int, int] = {}
    seen = {id(e)}
    todo = [e]
    while todo:
        for k in children(todo.pop()):
            uses[id(k)] = uses.get(id(k), 0) + 1
            if id(k) not in seen:
                seen.add(id(k))
                todo.append(k)
    memo: dict[int, Any] = {}
    stack: list[tuple[Expr, bool]] = [(e, False)]
    while stack:
        x, ready = stack.pop()
        if id(x) in memo:
            continue
        if isinstance(x, Reduce):
            raise ValueError("nested reductions are evaluated by evaluate_tensor")
        kids = children(x)
        if kids and not ready:
            stack.append((x, True))
            stack.extend((k, False) for k in reversed(kids) if id(k) not in memo)
            continue
        memo[id(x)] = _eval_node(x, [memo[id(k)] for k in kids], env, values)
        for k in kids:
            uses[id(k)] -= 1
            if not uses[id(k)]:
                del memo[id(k)]
    return memo[id(e)]


def _eval_node(e: Expr, kids: list[Any], env: dict[str, np.ndarray], values: Mapping[int, np.ndarray]) -> Any:
    """One node's value from its children's values."""
    if isinstance(e, Const):
        return np.asarray(e.value, dtype=np_dtype(e.dtype))
    if isinstance(e, Var):
        return env[e.name]
    if isinstance(e, BinOp):
        return np.asarray(_binop(e.op, kids[0], kids[1], e.dtype)).astype(np_dtype(e.dtype), copy=False)
    if isinstance(e, Call):
        with np.errstate(all="ignore"):
            return np.asarray(CALLS[e.fn](*kids)).astype(np_dtype(e.dtype), copy=False)
    if isinstance(e, Select):
        return np.where(kids[0], kids[1], kids[2]).astype(np_dtype(e.dtype), copy=False)
    if isinstance(e, Cast):
        with np.errstate(all="ignore"):
            return np.asarray(kids[0]).astype(np_dtype(e.dtype))
    if isinstance(e, Load):
        arr = values[id(e.tensor)]
        idx = [np.asarray(i).astype(np.int64) for i in kids]
        return arr[tuple(idx)] if idx else arr[()]
    raise TypeError(f"cannot evaluate {e!r}")


def _eval_tensor(t: Tensor, values: Mapping[int, np.ndarray]) -> np.ndarray:
    assert t.body is not None
    rank = len(t.shape)
    env: dict[str, np.ndarray] = {}
    body = t.body
    red = body if isinstance(body, Reduce) else None
    nred = len(red.axes) if red else 0
    full = list(t.shape) + (list(red.extents) if red else [])
    for k, ax in enumerate(t.axes):
        env[ax.name] = np.arange(t.shape[k]).reshape([-1 if j == k else 1 for j in range(len(full))])
    if red:
        for k, (ax, n) in enumerate(zip(red.axes, red.extents, strict=True)):
            env[ax.name] = np.arange(n).reshape([-1 if j == rank + k else 1 for j in range(len(full))])
        inner = _eval(red.body, env, values)
        inner = np.broadcast_to(inner, full)
        axes = tuple(range(rank, rank + nred))
        acc_dtype = np.float64 if inner.dtype.kind == "f" else inner.dtype
        fn = {"sum": np.sum, "max": np.max, "min": np.min, "prod": np.prod}[red.combiner]
        out = fn(inner.astype(acc_dtype), axis=axes) if red.extents and all(red.extents) else \
            np.full(t.shape, {"sum": 0, "prod": 1, "max": -np.inf, "min": np.inf}[red.combiner])
        return np.asarray(out).astype(np_dtype(t.dtype))
    out = _eval(body, env, values)
    return np.broadcast_to(out, t.shape).astype(np_dtype(t.dtype)).copy()


def evaluate(
    outputs: list[Tensor], feeds: Mapping[Tensor, np.ndarray] | list[tuple[Tensor, np.ndarray]]
) -> list[np.ndarray]:
    """Evaluate computed tensors ``outputs`` given arrays for their placeholders.

    Reductions must be the outermost expression of a compute (``out[i] = sum(...)``)."""
    values: dict[int, np.ndarray] = {}
    items = feeds.items() if isinstance(feeds, Mapping) else feeds
    for t, v in items:
        values[id(t)] = np.asarray(v)
    for t in topo_order(outputs):
        if id(t) in values:
            continue
        if t.is_placeholder:
            raise KeyError(f"no value fed for placeholder {t.name}")
        values[id(t)] = _eval_tensor(t, values)
    return [values[id(o)] for o in outputs]


def evaluate_expr(e: Expr, env: Mapping[str, np.ndarray], values: Mapping[Tensor, np.ndarray]) -> np.ndarray:
    """Evaluate a reduction-free expression with index arrays ``env`` for its variables and
    arrays for the tensors it loads (used to pre-compute packed constants at compile time)."""
    return np.asarray(_eval(e, dict(env), {id(t): v for t, v in values.items()}))
