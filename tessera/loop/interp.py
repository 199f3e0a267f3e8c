"""A scalar interpreter of loop-IR kernels on NumPy arrays: the oracle for code generators.

Every loop kind runs with serial semantics. Values are NumPy scalars of the expression dtype
(index arithmetic uses Python ints), so float32 rounding and integer wrap-around follow NumPy.
Semantics shared with the C backend:

* ``floordiv``/``mod`` round toward negative infinity (NumPy/Python); ``div`` on integers
  truncates toward zero; integer division or modulo by zero gives 0 (as NumPy does).
* float ``min``/``max`` propagate NaN (``numpy.minimum``/``maximum``).
* ``Select`` evaluates only the chosen branch.
* Out-of-bounds accesses raise :class:`IndexError` (no negative-index wrap-around).
* Fresh local buffers are filled with NaN (floats) or the dtype's maximum (integers) so that a
  kernel that reads a buffer before writing it gives visibly wrong results.

The expression tree is translated once into nested closures, which is several times faster
than re-dispatching on node types at every evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tessera.loop.expr import INDEX, BinOp, Call, Cast, Const, Expr, Load, Select, Var, is_int
from tessera.loop.ir import Allocate, Buffer, For, If, Kernel, Seq, Stmt, Store
from tessera.loop.te_eval import CALLS, np_dtype

Env = dict[str, Any]
Fn = Callable[[Env], Any]
Run = Callable[[Env], None]


def run_kernel(kernel: Kernel, args: list[np.ndarray]) -> None:
    """Run ``kernel`` on ``args`` (one array per param, inputs first); outputs are written in place."""
    if len(args) != len(kernel.params):
        raise ValueError(f"kernel {kernel.name} takes {len(kernel.params)} arrays, got {len(args)}")
    bufs: dict[int, np.ndarray] = {}
    for buf, arr in zip(kernel.params, args, strict=True):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"argument for {buf.name} must be a numpy array, got {type(arr).__name__}")
        if tuple(arr.shape) != tuple(buf.shape) or arr.dtype != np_dtype(buf.dtype):
            raise ValueError(
                f"argument for {buf.name}: expected {buf.dtype}{list(buf.shape)}, got {arr.dtype}{list(arr.shape)}")
        bufs[id(buf)] = arr
    run = _Compiler(bufs).stmt(kernel.body)
    with np.errstate(all="ignore"):
        run({})


def _fill_value(dtype: str) -> Any:
    if is_int(dtype):
        return False if dtype == "bool" else np.iinfo(np_dtype(dtype)).max
    return np.nan


def _out_of_bounds(buf: Buffer, idx: tuple[int, ...]) -> None:
    raise IndexError(f"{buf.name}{list(idx)} out of bounds for shape {list(buf.shape)}")


def _int_div(a: Any, b: Any) -> Any:
    if b == 0:
        return 0
    q = abs(int(a)) // abs(int(b))
    return q if (a < 0) == (b < 0) else -q


def _fmin(a: Any, b: Any) -> Any:
    return a if (a < b or a != a) else b


def _fmax(a: Any, b: Any) -> Any:
    return a if (a > b or a != a) else b


def _ipow(a: Any, b: Any) -> Any:
    if b < 0:
        return 1 if a == 1 else (1 if b % 2 == 0 else -1) if a == -1 else 0
    return int(a) ** int(b)


_PY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "and": lambda a, b: bool(a) and bool(b),
    "or": lambda a, b: bool(a) or bool(b),
}


def _binop_fn(op: str, dtype: str) -> Callable[[Any, Any], Any]:
    integer = is_int(dtype)
    if op in _PY_OPS:
        return _PY_OPS[op]
    if op == "div":
        return _int_div if integer else (lambda a, b: a / b)
    if op == "floordiv":
        return (lambda a, b: 0 if b == 0 else a // b) if integer else (lambda a, b: a // b)
    if op == "mod":
        return (lambda a, b: 0 if b == 0 else a % b) if integer else (lambda a, b: a % b)
    if op == "min":
        return min if integer else _fmin
    if op == "max":
        return max if integer else _fmax
    if op == "pow":
        return _ipow if integer else (lambda a, b: a ** b)
    raise ValueError(f"unknown binary op {op!r}")


def _to_dtype(dtype: str) -> Callable[[Any], Any]:
    """Convert a scalar to ``dtype`` with NumPy ``astype`` semantics (wrap-around, truncation)."""
    if dtype == INDEX:
        return lambda x: int(np.asarray(x).astype(np.int64)[()])
    nd = np_dtype(dtype)
    return lambda x: np.asarray(x).astype(nd)[()]


def _call(fn: str) -> Callable[..., Any]:
    if fn == "erf":
        return lambda x: math.erf(float(x))
    f = CALLS.get(fn)
    if f is None:
        raise ValueError(f"unknown function {fn!r}")
    return f


class _Compiler:
    """Turns statements and expressions into closures over an environment of loop variables."""

    def __init__(self, bufs: dict[int, np.ndarray]) -> None:
        self.bufs = bufs

    # ---- expressions -------------------------------------------------------------------------
    def expr(self, e: Expr) -> Fn:
        if isinstance(e, Const):
            v = int(e.value) if e.dtype == INDEX else np_dtype(e.dtype).type(e.value)
            return lambda env: v
        if isinstance(e, Var):
            name = e.name
            return lambda env: env[name]
        if isinstance(e, BinOp):
            return self._binop(e)
        if isinstance(e, Select):
            c, a, b = self.expr(e.cond), self.expr(e.a), self.expr(e.b)
            return lambda env: a(env) if c(env) else b(env)
        if isinstance(e, Cast):
            v, conv = self.expr(e.value), _to_dtype(e.dtype)
            return lambda env: conv(v(env))
        if isinstance(e, Call):
            args = [self.expr(a) for a in e.args]
            f, conv = _call(e.fn), _to_dtype(e.dtype)
            return lambda env: conv(f(*(a(env) for a in args)))
        if isinstance(e, Load):
            return self._load(e)
        raise TypeError(f"cannot interpret expression {e!r}")

    def _binop(self, e: BinOp) -> Fn:
        a, b = self.expr(e.a), self.expr(e.b)
        f = _binop_fn(e.op, e.a.dtype)
        if e.dtype == INDEX and e.op in ("add", "sub", "mul", "min", "max", "floordiv", "mod"):
            return lambda env: f(a(env), b(env))  # exact Python ints; int64 loads wrap in NumPy
        conv = _to_dtype(e.dtype)
        if e.op in ("add", "sub", "mul", "div") and not is_int(e.dtype):
            return lambda env: f(a(env), b(env))  # float32 op float32 stays float32
        return lambda env: conv(f(a(env), b(env)))

    def _indices(self, buf: Buffer, indices: tuple[Expr, ...]) -> Callable[[Env], tuple[int, ...]]:
        if len(indices) != len(buf.shape):
            raise ValueError(f"{buf.name} has rank {len(buf.shape)}, accessed with {len(indices)} indices")
        fs = [self.expr(i) for i in indices]
        shape = buf.shape
        if len(fs) == 1:
            (f0,), (n0,) = fs, shape

            def index1(env: Env) -> tuple[int, ...]:
                i = int(f0(env))
                if not 0 <= i < n0:
                    _out_of_bounds(buf, (i,))
                return (i,)

            return index1
        if len(fs) == 2:
            (f0, f1), (n0, n1) = fs, shape

            def index2(env: Env) -> tuple[int, ...]:
                i, j = int(f0(env)), int(f1(env))
                if not (0 <= i < n0 and 0 <= j < n1):
                    _out_of_bounds(buf, (i, j))
                return (i, j)

            return index2

        def index_n(env: Env) -> tuple[int, ...]:
            idx = tuple(int(f(env)) for f in fs)
            if not all(0 <= i < n for i, n in zip(idx, shape, strict=True)):
                _out_of_bounds(buf, idx)
            return idx

        return index_n

    def _load(self, e: Load) -> Fn:
        buf = e.tensor
        if not isinstance(buf, Buffer):
            raise TypeError(f"loop-IR loads must reference a Buffer, got {type(buf).__name__}")
        key, bufs, idx = id(buf), self.bufs, self._indices(buf, e.indices)
        return lambda env: bufs[key][idx(env)]

    # ---- statements --------------------------------------------------------------------------
    def stmt(self, s: Stmt) -> Run:
        if isinstance(s, Seq):
            runs = [self.stmt(b) for b in s.body]

            def run_seq(env: Env) -> None:
                for r in runs:
                    r(env)

            return run_seq
        if isinstance(s, For):
            body, name, n = self.stmt(s.body), s.var.name, s.extent

            def run_for(env: Env) -> None:
                for i in range(n):
                    env[name] = i
                    body(env)

            return run_for
        if isinstance(s, Store):
            key, bufs = id(s.buffer), self.bufs
            idx, val = self._indices(s.buffer, s.indices), self.expr(s.value)

            def run_store(env: Env) -> None:
                bufs[key][idx(env)] = val(env)

            return run_store
        if isinstance(s, If):
            cond, then = self.expr(s.cond), self.stmt(s.then)

            def run_if(env: Env) -> None:
                if cond(env):
                    then(env)

            return run_if
        if isinstance(s, Allocate):
            return self._allocate(s)
        raise TypeError(f"cannot interpret statement {s!r}")

    def _allocate(self, s: Allocate) -> Run:
        buf, body, bufs = s.buffer, self.stmt(s.body), self.bufs
        nd, fill = np_dtype(buf.dtype), _fill_value(buf.dtype)

        def run_alloc(env: Env) -> None:
            saved = bufs.get(id(buf))
            bufs[id(buf)] = np.full(buf.shape, fill, dtype=nd)
            body(env)
            if saved is None:
                del bufs[id(buf)]
            else:
                bufs[id(buf)] = saved

        return run_alloc
