"""Scalar C expressions for loop-IR expression trees."""

from __future__ import annotations

from tessera.codegen.c_types import FLOATS, HALF, NARROW, SIGNED, UNSIGNED, c_type, half_cast, literal
from tessera.loop.computes.index_check import INDEX_CHECK
from tessera.loop.expr import BinOp, Call, Cast, Const, Expr, Load, Ranges, Select, Var, bounds, is_int

_CMP = {"lt": "<", "le": "<=", "eq": "==", "ne": "!="}
_ARITH = {"add": "+", "sub": "-", "mul": "*"}
# math.h functions with an f-suffixed float version (a target may declare vector versions: c_vector)
LIBM = ("exp", "log", "sqrt", "tanh", "erf", "floor", "ceil", "sin", "cos", "tan", "asin", "acos", "atan", "sinh",
         "cosh", "asinh", "acosh", "atanh", "log1p", "expm1", "pow", "fmod", "atan2")


def _suffix(dtype: str) -> str:
    return "f" if dtype == "f32" else ""


class ScalarExprs:
    """Mixin emitting a scalar C expression; the host class resolves variables and loads."""

    ranges: dict[str, tuple[int, int]]
    hoisted: set[Expr]  # index checks made before an enclosing loop (emitted as their plain index)

    def var_ref(self, name: str) -> str:
        raise NotImplementedError

    def load_ref(self, e: Load) -> str:
        raise NotImplementedError

    def index_site(self, site: Expr) -> str:
        """C name of the message of an index check's site (an ``index_check`` call's last argument);
        the C function being emitted then declares ``tsr_hit``."""
        raise NotImplementedError

    def sexpr(self, e: Expr) -> str:
        """C text of ``e`` (an expression of C type ``c_type(e.dtype)``, or int for bool)."""
        if isinstance(e, Const):
            return literal(e.value, e.dtype)
        if isinstance(e, Var):
            return self.var_ref(e.name)
        if isinstance(e, BinOp):
            return self._binop(e)
        if isinstance(e, Select):
            return f"({self.sexpr(e.cond)} ? {self.sexpr(e.a)} : {self.sexpr(e.b)})"
        if isinstance(e, Cast):
            return self._cast(e)
        if isinstance(e, Call):
            return self._call(e)
        if isinstance(e, Load):
            return self.load_ref(e)
        raise TypeError(f"cannot emit C for expression {e!r}")

    def _nonneg(self, e: Expr, ranges: Ranges) -> bool:
        b = bounds(e, ranges)
        return b is not None and b[0] >= 0

    def _binop(self, e: BinOp) -> str:
        op, dt = e.op, e.a.dtype
        c_type(dt)
        a, b = self.sexpr(e.a), self.sexpr(e.b)
        if op in _CMP:
            return f"({a} {_CMP[op]} {b})"
        if op == "and":
            return f"({a} && {b})"
        if op == "or":
            return f"({a} || {b})"
        if dt in FLOATS:
            s = _suffix(dt)
            if op in _ARITH:
                return f"({a} {_ARITH[op]} {b})"
            if op == "div":
                return f"({a} / {b})"
            if op == "pow":
                return f"pow{s}({a}, {b})"
            if op in ("floordiv", "mod", "min", "max"):
                return f"tsr_{op}_{dt}({a}, {b})"
            raise ValueError(f"unknown binary op {op!r}")
        return self._int_binop(e, a, b)

    def _int_binop(self, e: BinOp, a: str, b: str) -> str:
        op, dt = e.op, e.a.dtype
        ct = c_type(dt)
        unsigned = dt in UNSIGNED
        if dt == "bool":
            if op in ("add", "max", "or"):
                return f"({a} || {b})"
            if op in ("mul", "min", "and"):
                return f"({a} && {b})"
            if op == "sub":
                return f"({a} != {b})"
        if op in _ARITH:
            # u8/u16 operands promote to int: multiply as uint32_t so a wrap-around is not signed overflow
            a2 = f"(uint32_t){a}" if op == "mul" and dt in ("u8", "u16") else a
            r = f"({a2} {_ARITH[op]} {b})"
        elif op in ("div", "floordiv", "mod"):
            const_b = isinstance(e.b, Const) and int(e.b.value) not in (0, -1)  # x / -1 may trap: the helper
            plain = const_b and (op == "div" or unsigned or (int(e.b.value) > 0 and self._nonneg(e.a, self.ranges)))
            if plain:
                r = f"({a} {'%' if op == 'mod' else '/'} {b})"
            elif unsigned:
                r = f"tsr_{'mod' if op == 'mod' else 'div'}_u64({a}, {b})"
            else:
                r = f"tsr_{op}_i64({a}, {b})"
        elif op in ("min", "max"):
            r = f"tsr_{op}_{'u64' if unsigned else 'i64'}({a}, {b})"
        elif op == "pow":
            r = f"tsr_pow_i64({a}, {b})"
        else:
            raise ValueError(f"unknown binary op {op!r}")
        return f"(({ct}){r})" if dt in NARROW or r.startswith("tsr_") else r

    def _cast(self, e: Cast) -> str:
        src = e.value.dtype
        c_type(src)
        a = self.sexpr(e.value)
        if src in HALF or e.dtype in HALF:
            return half_cast(a, src, e.dtype)
        if e.dtype == "bool":
            return f"({a} != 0)"
        if src in FLOATS and (e.dtype in SIGNED or e.dtype in UNSIGNED):
            return f"tsr_f2{e.dtype}((double)({a}))"  # defined for NaN and values out of range, unlike a C cast
        return f"(({c_type(e.dtype)})({a}))"

    def _call(self, e: Call) -> str:
        fn, dt = e.fn, e.args[0].dtype
        c_type(dt)
        if fn == INDEX_CHECK and e in self.hoisted:  # checked before an enclosing loop
            return self.sexpr(e.args[0])
        if fn == INDEX_CHECK:  # the index itself; records the site when out of [0, n)
            w, n = self.sexpr(e.args[0]), self.sexpr(e.args[1])
            return f"tsr_index_check({w}, {n}, {self.index_site(e.args[2])}, &tsr_hit)"
        args = [self.sexpr(a) for a in e.args]
        x = args[0]
        rt = c_type(e.dtype)
        if fn == "neg":
            if dt == "i64":  # INT64_MIN wraps (as in NumPy) instead of overflowing
                return f"((int64_t)(0 - (uint64_t){x}))"
            return f"(({rt})(-{x}))" if is_int(dt) else f"(-{x})"
        if fn == "not":
            return f"(({rt})(!{x}))"
        if fn == "xor":
            return f"(({rt})(({x} != 0) != ({args[1]} != 0)))"
        if fn == "shl":  # in unsigned arithmetic: a signed left shift that overflows is undefined in C
            return f"(({rt})((uint64_t)({x}) << ({args[1]})))"
        if fn in ("bitand", "bitor", "bitxor", "shr"):
            sym = {"bitand": "&", "bitor": "|", "bitxor": "^", "shl": "<<", "shr": ">>"}[fn]
            return f"(({rt})({x} {sym} {args[1]}))"
        if fn == "bitnot":
            return f"(({rt})(!{x}))" if dt == "bool" else f"(({rt})(~{x}))"
        if fn in ("isnan", "isinf"):
            return f"(({rt}){fn}({x}))" if dt in FLOATS else f"(({rt})0)"
        if is_int(dt):
            return self._int_call(e, args, rt)
        s = _suffix(dt)
        one = literal(1, dt)
        if fn in LIBM:
            return f"{fn}{s}({', '.join(args)})"
        if fn == "abs":
            return f"fabs{s}({x})"
        if fn == "round":
            return f"nearbyint{s}({x})"  # round half to even, as NumPy
        if fn == "rsqrt":
            return f"({one} / sqrt{s}({x}))"
        if fn == "sigmoid":
            return f"({one} / ({one} + exp{s}(-{x})))"
        if fn == "sign":
            return f"tsr_sign_{dt}({x})"
        raise ValueError(f"unknown function {fn!r}")

    def _int_call(self, e: Call, args: list[str], rt: str) -> str:
        fn, x = e.fn, args[0]
        if fn == "abs":
            return f"(({rt})tsr_abs_i64({x}))" if e.args[0].dtype in SIGNED else f"(({rt}){x})"
        if fn == "sign":
            return f"(({rt})tsr_sign_i64({x}))"
        if fn in ("floor", "ceil", "round"):
            return f"(({rt}){x})"
        if fn == "fmod":  # C's % truncates like fmod; exact, unlike fmod in double (0 for a zero divisor, as NumPy)
            helper = "tsr_mod_u64" if e.args[0].dtype in UNSIGNED else "tsr_fmod_i64"
            return f"(({rt}){helper}({x}, {args[1]}))"
        if fn in LIBM or fn in ("rsqrt", "sigmoid"):
            # NumPy computes these in floating point for integer inputs; so do we (in double)
            if fn == "rsqrt":
                return f"(({rt})(1.0 / sqrt((double){x})))"
            if fn == "sigmoid":
                return f"(({rt})(1.0 / (1.0 + exp(-(double){x}))))"
            return f"(({rt}){fn}({', '.join(f'(double){a}' for a in args)}))"
        raise ValueError(f"unknown function {fn!r} for {e.args[0].dtype}")
