"""Explicit GCC-vector-extension code for the body of a vectorized loop.

A vectorized loop over ``v`` with ``L`` lanes becomes steps over ``v = base, base + L, ...``;
in each step every expression is either *invariant* in ``v`` (emitted as scalar C, broadcast
where a vector is needed) or a vector of ``L`` lanes. Loads and stores must be contiguous
in ``v`` (flat-offset coefficient 1). Anything else raises :class:`NoVec` and the caller
falls back to a scalar loop.

Math functions (exp, erf, tanh, sqrt, pow, ...; sigmoid and rsqrt through exp and sqrt) are
vectorized only where the target declares a vector version for the dtype and lane count (its
``[[intrinsics]]`` whose op is a math.h function, see :mod:`tessera.targets.target`): the step
calls it on whole vectors, and :func:`math_declarations` gives the includes/prototypes to emit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tessera.codegen.c_expr import LIBM
from tessera.codegen.c_types import FLOATS, IDENT, WIDTH, c_type, mask_dtype, vec_type, vector_ok
from tessera.loop.expr import (
    BinOp,
    Call,
    Cast,
    Const,
    Expr,
    Load,
    Select,
    Var,
    bounds,
    const,
    free_vars,
    loads_in,
    simplify,
    substitute,
)
from tessera.loop.ir import Buffer, Store

if TYPE_CHECKING:
    from tessera.targets.target import Intrinsic

MathKey = tuple[str, str, int]  # (math.h function, dtype, lanes)
# below these, exp(x) is under half the smallest subnormal (ln 2**-150, ln 2**-1075): it rounds to +0
EXP_ZERO_BELOW = {"f32": -104.0, "f64": -746.0}


class NoVec(Exception):
    """The loop body is not expressible as explicit vector code."""


class NotPromotable(Exception):
    """A promoted local buffer is accessed in a way that cannot be mapped to registers."""

    def __init__(self, buf: Buffer, why: str) -> None:
        super().__init__(f"{buf.name}: {why}")
        self.buf = buf


@dataclass
class Promo:
    """A local buffer kept in named variables: one per element (lanes 1) or per L-element chunk."""

    name: str
    buf: Buffer
    lanes: int

    def ref(self, flat: int) -> str:
        if not 0 <= flat < self.buf.numel:
            raise ValueError(f"constant index {flat} out of bounds for local buffer {self.buf.name}")
        if self.lanes == 1:
            return f"{self.name}_{flat}"
        return f"{self.name}_{flat // self.lanes}[{flat % self.lanes}]"

    def declaration(self) -> str:
        n = self.buf.numel // self.lanes
        ty = c_type(self.buf.dtype) if self.lanes == 1 else vec_type(self.buf.dtype, self.lanes)
        return f"{ty} {', '.join(f'{self.name}_{k}' for k in range(n))};"


def _finite_const(e: Expr) -> bool:
    return isinstance(e, Const) and not isinstance(e.value, bool) and math.isfinite(float(e.value))


def linear_coeff(e: Expr, v: str) -> int | None:
    """Coefficient of variable ``v`` if ``e`` is affine in it, else None (0 if ``v`` is absent)."""
    if v not in free_vars(e):
        return 0
    if isinstance(e, Var):
        return 1
    if isinstance(e, BinOp):
        if e.op in ("add", "sub"):
            a, b = linear_coeff(e.a, v), linear_coeff(e.b, v)
            if a is None or b is None:
                return None
            return a + b if e.op == "add" else a - b
        if e.op == "mul":
            for x, y in ((e.a, e.b), (e.b, e.a)):
                if isinstance(y, Const) and not isinstance(y.value, bool):
                    c = linear_coeff(x, v)
                    return None if c is None else c * int(y.value)
    return None


def vector_math_table(intrinsics: Iterable[Intrinsic]) -> dict[MathKey, Intrinsic]:
    """The intrinsics among ``intrinsics`` that are vector versions of math.h functions on float
    vectors, by (function, dtype, lanes); the first one wins where several are declared."""
    table: dict[MathKey, Intrinsic] = {}
    for i in intrinsics:
        if i.op in LIBM and i.dtype in FLOATS and vector_ok(i.dtype, i.lanes):
            if not IDENT.match(i.c_name):
                raise ValueError(f"intrinsic {i.op} ({i.dtype} x {i.lanes}): c_name {i.c_name!r} is not a C identifier")
            table.setdefault((i.op, i.dtype, i.lanes), i)
    return table


def math_declarations(used: dict[str, tuple[Intrinsic, int]]) -> list[str]:
    """C lines making the vector math functions in ``used`` (c_name -> (intrinsic, arity)) callable:
    their headers, and a prototype on GCC vector types for those without one (libmvec)."""
    lines = [f"#include <{h}>" for h in sorted({i.header for i, _ in used.values() if i.header})]
    for name, (i, arity) in sorted(used.items()):
        if not i.header:
            vt = vec_type(i.dtype, i.lanes)
            lines.append(f"extern {vt} {name}({', '.join([vt] * arity)});")
    return lines


@dataclass
class _VState:
    var: str
    base: Expr
    lanes: int
    width: int
    lines: list[str] = field(default_factory=list)
    memo: dict[Expr, str] = field(default_factory=dict)
    branch: int = 0
    calls: dict[str, tuple[Intrinsic, int]] = field(default_factory=dict)


class VectorExprs:
    """Mixin for the C emitter: vector code for one step of a vectorized loop."""

    ranges: dict[str, tuple[int, int]]
    promoted: dict[int, Promo]
    vector_math: dict[MathKey, Intrinsic]
    math_used: dict[str, tuple[Intrinsic, int]]
    # set while a register tile is stored across its lanes (see _across_registers): transposed
    # registers by (tile, register indices)
    row_transposes: dict[tuple[str, tuple[int, ...]], list[str]] | None = None

    def sexpr(self, e: Expr) -> str:
        raise NotImplementedError

    def flat_index(self, buf: Buffer, indices: tuple[Expr, ...]) -> Expr:
        raise NotImplementedError

    def buffer_ref(self, buf: Buffer) -> str:
        raise NotImplementedError

    def fresh(self, prefix: str) -> str:
        raise NotImplementedError

    def vector_step(self, stores: list[Store], var: str, base: Expr, lanes: int) -> list[str]:
        """Lines computing ``stores`` for lanes ``base .. base+lanes-1`` of ``var``."""
        width = WIDTH[stores[0].buffer.dtype]
        self._v = _VState(var, base, lanes, width)
        for st in stores:
            flat = self.flat_index(st.buffer, st.indices)
            if linear_coeff(flat, var) != 1:
                raise NoVec("store not contiguous in the vector variable")
            value = self._vec(st.value)
            self._v.lines.append(f"{self._vref(st.buffer, flat, store=True)} = {value};")
            self._v.memo.clear()  # later loads must see this store
        self.math_used.update(self._v.calls)
        return self._v.lines

    def vector_fold(self, value: Expr, op: str, accs: list[str], var: str, bases: list[Expr], lanes: int) -> list[str]:
        """Lines folding ``value`` at lanes ``base .. base+lanes-1`` of ``var`` into the vector
        accumulator ``accs[k]`` with ``op`` (add, mul, min or max; NaN propagates through min/max),
        for each ``bases[k]``. Expressions invariant in ``var`` are computed once for all bases."""
        self._v = _VState(var, bases[0], lanes, WIDTH[value.dtype])
        vt = self._vt(value.dtype)
        for acc, base in zip(accs, bases, strict=True):
            self._v.base = base
            self._v.memo = {k: n for k, n in self._v.memo.items() if var not in free_vars(k)}
            t = self._vec(value)
            self._v.lines.append(f"{acc} = {self._vcombine(op, vt, acc, t, value.dtype)};")
        self.math_used.update(self._v.calls)
        return self._v.lines

    def vector_merge(self, op: str, dtype: str, lanes: int, accs: list[str]) -> list[str]:
        """Lines combining the vectors ``accs[1:]`` into ``accs[0]`` with ``op`` (pairwise)."""
        self._v = _VState("", const(0), lanes, WIDTH[dtype])
        vt = self._vt(dtype)
        while len(accs) > 1:
            for a, b in zip(accs[::2], accs[1::2], strict=False):
                self._v.lines.append(f"{a} = {self._vcombine(op, vt, a, b, dtype)};")
            accs = accs[::2]
        return self._v.lines

    # ---- helpers -----------------------------------------------------------------------------
    def _vt(self, dtype: str) -> str:
        st = self._v
        if dtype == "bool":
            return vec_type(mask_dtype(st.width), st.lanes)
        if not vector_ok(dtype, st.lanes) or WIDTH[dtype] != st.width:
            raise NoVec(f"{dtype} does not fit {st.lanes} lanes of {st.width} bytes")
        return vec_type(dtype, st.lanes)

    def _emit(self, ty: str, rhs: str, key: Expr | None = None) -> str:
        t = self.fresh("t")
        self._v.lines.append(f"{ty} {t} = {rhs};")
        if key is not None:
            self._v.memo[key] = t
        return t

    def _offset(self, flat: Expr) -> Expr:
        st = self._v
        return simplify(substitute(flat, {st.var: st.base}), self.ranges)

    def _vref(self, buf: Buffer, flat: Expr, store: bool = False) -> str:
        st = self._v
        off = self._offset(flat)
        promo = self.promoted.get(id(buf))
        if promo is not None:
            if not isinstance(off, Const) or promo.lanes != st.lanes or int(off.value) % st.lanes:
                raise NotPromotable(buf, "vector access not at a constant register boundary")
            promo.ref(int(off.value))
            return f"{promo.name}_{int(off.value) // st.lanes}"
        vt = vec_type(buf.dtype, st.lanes, unaligned=True)
        return f"*({'' if store else 'const '}{vt}*)({self.buffer_ref(buf)} + {self.sexpr(off)})"

    def _check_in_bounds(self, e: Expr) -> None:
        """Loads under a Select branch are evaluated unconditionally here: they must be in bounds."""
        for ld in loads_in(e):
            buf = ld.tensor
            b = bounds(self.flat_index(buf, ld.indices), self.ranges)
            if b is None or b[0] < 0 or b[1] >= buf.numel:
                raise NoVec(f"load of {buf.name} under a select may be out of bounds")

    def _broadcast(self, e: Expr) -> str:
        st = self._v
        if st.branch:
            self._check_in_bounds(e)
        s = self.sexpr(e)
        vt = self._vt(e.dtype)
        sv = self.fresh("s")
        if e.dtype == "bool":
            self._v.lines.append(f"{c_type(mask_dtype(st.width))} {sv} = ({s}) ? -1 : 0;")
        else:
            self._v.lines.append(f"{c_type(e.dtype)} {sv} = {s};")
        return self._emit(vt, "{" + ", ".join([sv] * st.lanes) + "}", e)

    # ---- expressions -------------------------------------------------------------------------
    def _vec(self, e: Expr) -> str:
        """Name of a vector (or mask, for bool) holding ``e`` for the current lanes."""
        st = self._v
        if e in st.memo:
            return st.memo[e]
        if st.var not in free_vars(e):
            return self._broadcast(e)
        vt = self._vt(e.dtype)
        if isinstance(e, Load):
            buf = e.tensor
            flat = self.flat_index(buf, e.indices)
            if self.row_transposes is not None and id(buf) in self.promoted and linear_coeff(flat, st.var) != 1:
                return self._across_registers(buf, flat)
            if buf.dtype != e.dtype or linear_coeff(flat, st.var) != 1:
                raise NoVec("load not contiguous in the vector variable")
            if e.dtype == "bool":  # stored as bytes; a lane-wide mask would need a widening load
                raise NoVec("bool loads are not vectorized")
            if st.branch:
                self._check_in_bounds(e)
            return self._emit(vt, self._vref(buf, flat), e)
        if isinstance(e, BinOp):
            return self._vbinop(e, vt)
        if isinstance(e, Select):
            if st.var not in free_vars(e.cond):
                c = self.sexpr(e.cond)
                st.branch += 1
                a, b = self._vec(e.a), self._vec(e.b)
                st.branch -= 1
                return self._emit(vt, f"({c}) ? {a} : {b}", e)
            m = self._vec(e.cond)
            st.branch += 1
            a, b = self._vec(e.a), self._vec(e.b)
            st.branch -= 1
            return self._blend(vt, m, a, b, e)
        if isinstance(e, Cast):
            if e.dtype == "bool" or e.value.dtype == "bool":
                raise NoVec("casts from/to bool are not vectorized")
            if e.value.dtype in FLOATS and e.dtype.startswith("u"):
                raise NoVec("float to unsigned casts are not vectorized")
            a = self._vec(e.value)
            if e.value.dtype not in FLOATS or e.dtype in FLOATS:
                return self._emit(vt, f"__builtin_convertvector({a}, {vt})", e)
            # float to int as tsr_f2<int> does: x86 converts NaN and values out of range to INT_MIN (the
            # saturated value below the range), so lanes at or above 2**(w-1) take MAX and NaN lanes 0
            r = self._emit(vt, f"__builtin_convertvector({a}, {vt})")
            bits = 8 * WIDTH[e.dtype]
            mt = self._vt("bool")
            hi = self._emit(mt, f"{a} >= {self._vec(const(2.0 ** (bits - 1), e.value.dtype))}")
            r = self._blend(vt, hi, self._vec(const(2 ** (bits - 1) - 1, e.dtype)), r, None)
            nan = self._emit(mt, f"{a} != {a}")
            return self._blend(vt, nan, self._vec(const(0, e.dtype)), r, e)
        if isinstance(e, Call):
            return self._vcall(e, vt)
        raise NoVec(f"{type(e).__name__} {getattr(e, 'op', '')} is not vectorized")

    def _across_registers(self, buf: Buffer, flat: Expr) -> str:
        """A vector whose lane ``j`` is one lane of the ``j``-th of several registers of a promoted
        tile (the vector variable steps from register to register): the registers are transposed
        once, by pairwise interleaving shuffles, and each of their lanes becomes one vector."""
        st, promo = self._v, self.promoted[id(buf)]
        big, stride, off = promo.lanes, linear_coeff(flat, st.var), self._offset(flat)
        if big % st.lanes or not stride or stride % big or not isinstance(off, Const):
            raise NoVec("not a transposable read of a register tile")
        rows = [int(off.value) + j * stride for j in range(st.lanes)]
        if min(rows) < 0 or max(rows) >= buf.numel:
            raise NoVec("register tile read out of bounds")
        assert self.row_transposes is not None
        key = (promo.name, tuple(r // big for r in rows))
        if key not in self.row_transposes:
            self.row_transposes[key] = self._transpose([f"{promo.name}_{r // big}" for r in rows], buf.dtype, big)
        return self.row_transposes[key][rows[0] % big]

    def _transpose(self, regs: list[str], dtype: str, big: int) -> list[str]:
        """``big`` vectors of ``len(regs)`` (a power of two) lanes: vector ``k`` holds lane ``k`` of
        each of ``regs`` (vectors of ``big`` lanes), in order."""
        n, width = len(regs), WIDTH[dtype]
        vt, mt = vec_type(dtype, big), vec_type(mask_dtype(width), big)
        masks = ["{" + ", ".join(str(h + i // 2 + (big if i % 2 else 0)) for i in range(big)) + "}"
                 for h in (0, big // 2)]
        cur = list(regs)
        for _ in range(n.bit_length() - 1):  # interleave register i with register i + n/2, lanes low then high
            cur = [self._emit(vt, f"__builtin_shuffle({cur[i]}, {cur[i + n // 2]}, ({mt}){m})")
                   for i in range(n // 2) for m in masks]
        if n == big:
            return cur
        out, narrow = [], vec_type(dtype, n)
        for z in cur:  # lanes g*n .. g*n+n-1 of each: lane (index in cur) * big/n + g of the registers
            for g in range(big // n):
                t = self.fresh("t")
                self._v.lines.append(f"{narrow} {t}; memcpy(&{t}, (const char*)&{z} + {g * n * width}, {n * width});")
                out.append(t)
        return out

    def _vcall(self, e: Call, vt: str) -> str:
        fn, st = e.fn, self._v
        if fn == "neg" and e.dtype != "bool":
            return self._emit(vt, f"-{self._vec(e.args[0])}", e)
        if e.dtype not in FLOATS or any(a.dtype != e.dtype for a in e.args):
            raise NoVec(f"{fn} on {e.dtype} is not vectorized")
        if fn == "abs":
            a = self._vec(e.args[0])
            mt = self._vt("bool")
            mask = "0x7fffffff" if e.dtype == "f32" else "INT64_C(0x7fffffffffffffff)"
            return self._emit(vt, f"({vt})(({mt}){a} & ({mt}){{{', '.join([mask] * st.lanes)}}})", e)
        if fn == "exp":
            return self._vexp(self._vec(e.args[0]), e.dtype, vt, e)
        if fn in LIBM:
            f = self._math_fn(fn, e.dtype, len(e.args))
            return self._emit(vt, f"{f}({', '.join(self._vec(a) for a in e.args)})", e)
        # composites, computed as the scalar code computes them (c_expr.ScalarExprs._call)
        if fn == "sigmoid":
            one, x = self._vec(const(1, e.dtype)), self._vec(e.args[0])
            ex = self._vexp(self._emit(vt, f"-{x}"), e.dtype, vt)
            return self._emit(vt, f"{one} / ({one} + {ex})", e)
        if fn == "rsqrt":
            f = self._math_fn("sqrt", e.dtype, 1)
            one, x = self._vec(const(1, e.dtype)), self._vec(e.args[0])
            return self._emit(vt, f"{one} / {f}({x})", e)
        raise NoVec(f"{fn} on {e.dtype} is not vectorized")

    def _vexp(self, x: str, dtype: str, vt: str, key: Expr | None = None) -> str:
        """The target's vector exp of ``x``, with lanes where exp rounds to +0 (``x`` below
        :data:`EXP_ZERO_BELOW`, -inf included) set to 0 around the call: vector math libraries
        compute such lanes through a scalar callout (glibc's libmvec below about -87), which made
        softmax over masked attention scores (-3.4e38) 2.3x slower. Same results, NaN included."""
        f = self._math_fn("exp", dtype, 1)
        mt = self._vt("bool")
        low, zero = self._vec(const(EXP_ZERO_BELOW[dtype], dtype)), self._vec(const(0, dtype))
        m = self._emit(mt, f"{x} < {low}")
        arg = self._blend(vt, m, zero, x, None)
        y = self._emit(vt, f"{f}({arg})")
        return self._blend(vt, m, zero, y, key)

    def _math_fn(self, fn: str, dtype: str, arity: int) -> str:
        """C name of the target's vector ``fn`` for the current lanes of ``dtype`` (NoVec if none)."""
        st = self._v
        intr = self.vector_math.get((fn, dtype, st.lanes))
        if intr is None:
            raise NoVec(f"the target declares no vector {fn} for {st.lanes} x {dtype}")
        st.calls[intr.c_name] = (intr, arity)
        return intr.c_name

    def _blend(self, vt: str, m: str, a: str, b: str, key: Expr) -> str:
        return self._emit(vt, self._select(vt, m, a, b), key)

    def _select(self, vt: str, m: str, a: str, b: str) -> str:
        """C expression of the lanes of ``a`` where mask ``m`` is set, else of ``b``."""
        mt = self._vt("bool")
        return f"({vt})((({mt}){a} & {m}) | (({mt}){b} & ~{m}))"

    def _vbinop(self, e: BinOp, vt: str) -> str:
        op = e.op
        if op in ("and", "or"):
            a, b = self._vec(e.a), self._vec(e.b)
            return self._emit(vt, f"{a} {'&' if op == 'and' else '|'} {b}", e)
        if e.a.dtype == "bool":
            raise NoVec("bool arithmetic is not vectorized")
        self._vt(e.a.dtype)
        a, b = self._vec(e.a), self._vec(e.b)
        sym = {"add": "+", "sub": "-", "mul": "*", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}.get(op)
        if op == "div" and e.dtype in FLOATS:
            sym = "/"
        if sym is not None:
            return self._emit(vt, f"{a} {sym} {b}", e)
        if op == "pow" and e.dtype in FLOATS and e.b.dtype == e.dtype:
            return self._emit(vt, f"{self._math_fn('pow', e.dtype, 2)}({a}, {b})", e)
        if op in ("min", "max"):
            if e.dtype in FLOATS and _finite_const(e.b):
                # one compare when b cannot be NaN: b where a <= b (max) / a >= b (min), else a (NaN too)
                m = self._emit(self._vt("bool"), f"{a} {'<=' if op == 'max' else '>='} {b}")
                return self._emit(vt, self._select(vt, m, b, a), e)
            if e.dtype in FLOATS and _finite_const(e.a):
                m = self._emit(self._vt("bool"), f"{a} {'<' if op == 'min' else '>'} {b}")
                return self._emit(vt, self._select(vt, m, a, b), e)
            return self._emit(vt, self._vcombine(op, vt, a, b, e.dtype), e)
        raise NoVec(f"binary op {op} on {e.dtype} is not vectorized")

    def _vcombine(self, op: str, vt: str, a: str, b: str, dtype: str) -> str:
        """C expression of ``op`` (add, mul, min, max) on vectors ``a`` and ``b``; min/max pick
        ``a`` where it is NaN or wins, else ``b`` (NaN propagates, as numpy.minimum)."""
        if op in ("add", "mul"):
            return f"{a} {'+' if op == 'add' else '*'} {b}"
        if op not in ("min", "max"):
            raise NoVec(f"{op} is not a vector combiner")
        mt = self._vt("bool")
        nan = f" | ({a} != {a})" if dtype in FLOATS else ""
        m = self._emit(mt, f"({a} {'<' if op == 'min' else '>'} {b}){nan}")
        return self._select(vt, m, a, b)
