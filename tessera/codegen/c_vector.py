"""Explicit GCC-vector-extension code for the body of a vectorized loop.

A vectorized loop over ``v`` with ``L`` lanes becomes steps over ``v = base, base + L, ...``;
in each step every expression is either *invariant* in ``v`` (emitted as scalar C, broadcast
where a vector is needed) or a vector of ``L`` lanes. Loads and stores must be contiguous
in ``v`` (flat-offset coefficient 1). Anything else raises :class:`NoVec` and the caller
falls back to a scalar loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tessera.codegen.c_types import FLOATS, WIDTH, c_type, mask_dtype, vec_type, vector_ok
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
    free_vars,
    loads_in,
    simplify,
    substitute,
)
from tessera.loop.ir import Buffer, Store


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


@dataclass
class _VState:
    var: str
    base: Expr
    lanes: int
    width: int
    lines: list[str] = field(default_factory=list)
    memo: dict[Expr, str] = field(default_factory=dict)
    branch: int = 0


class VectorExprs:
    """Mixin for the C emitter: vector code for one step of a vectorized loop."""

    ranges: dict[str, tuple[int, int]]
    promoted: dict[int, Promo]

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
            return self._emit(vt, f"__builtin_convertvector({a}, {vt})", e)
        if isinstance(e, Call) and e.fn == "neg" and e.dtype != "bool":
            return self._emit(vt, f"-{self._vec(e.args[0])}", e)
        if isinstance(e, Call) and e.fn == "abs" and e.dtype in FLOATS:
            a = self._vec(e.args[0])
            mt = self._vt("bool")
            mask = "0x7fffffff" if e.dtype == "f32" else "INT64_C(0x7fffffffffffffff)"
            return self._emit(vt, f"({vt})(({mt}){a} & ({mt}){{{', '.join([mask] * st.lanes)}}})", e)
        raise NoVec(f"{type(e).__name__} {getattr(e, 'op', getattr(e, 'fn', ''))} is not vectorized")

    def _blend(self, vt: str, m: str, a: str, b: str, key: Expr) -> str:
        mt = self._vt("bool")
        return self._emit(vt, f"({vt})((({mt}){a} & {m}) | (({mt}){b} & ~{m}))", key)

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
        if op in ("min", "max"):
            mt = self._vt("bool")
            cmp = "<" if op == "min" else ">"
            nan = f" | ({a} != {a})" if e.dtype in FLOATS else ""  # NaN propagates, as numpy.minimum
            m = self._emit(mt, f"({a} {cmp} {b}){nan}")
            return self._blend(vt, m, a, b, e)
        raise NoVec(f"binary op {op} on {e.dtype} is not vectorized")
