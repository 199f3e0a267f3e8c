"""Scalar expressions shared by compute definitions and the loop IR.

Expressions are immutable trees. Index arithmetic is integer (``i64``); arithmetic on values
follows the operand dtype (a DType name such as ``"f32"``). Python operators build trees and
fold constants on the fly; :func:`simplify` applies range-aware index rewrites.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

INDEX = "i64"
BOOL = "bool"


class Expr:
    """Base class of expressions. ``dtype`` is a short DType name (``f32``, ``i64``, ``bool``)."""

    dtype: str

    # arithmetic -----------------------------------------------------------------------------
    def __add__(self, o: Any) -> Expr:
        return binop("add", self, o)

    def __radd__(self, o: Any) -> Expr:
        return binop("add", o, self)

    def __sub__(self, o: Any) -> Expr:
        return binop("sub", self, o)

    def __rsub__(self, o: Any) -> Expr:
        return binop("sub", o, self)

    def __mul__(self, o: Any) -> Expr:
        return binop("mul", self, o)

    def __rmul__(self, o: Any) -> Expr:
        return binop("mul", o, self)

    def __truediv__(self, o: Any) -> Expr:
        return binop("div", self, o)

    def __rtruediv__(self, o: Any) -> Expr:
        return binop("div", o, self)

    def __floordiv__(self, o: Any) -> Expr:
        return binop("floordiv", self, o)

    def __mod__(self, o: Any) -> Expr:
        return binop("mod", self, o)

    def __neg__(self) -> Expr:
        return binop("sub", const(0, self.dtype), self)

    # comparisons are methods: __eq__ stays structural equality for dataclasses
    def lt(self, o: Any) -> Expr:
        return binop("lt", self, o)

    def le(self, o: Any) -> Expr:
        return binop("le", self, o)

    def gt(self, o: Any) -> Expr:
        return binop("lt", o, self)

    def ge(self, o: Any) -> Expr:
        return binop("le", o, self)

    def eq(self, o: Any) -> Expr:
        return binop("eq", self, o)

    def ne(self, o: Any) -> Expr:
        return binop("ne", self, o)


@dataclass(frozen=True, eq=True)
class Const(Expr):
    value: int | float | bool
    dtype: str = INDEX


@dataclass(frozen=True, eq=True)
class Var(Expr):
    """A loop variable or an axis of a compute definition."""

    name: str
    dtype: str = INDEX


@dataclass(frozen=True, eq=True)
class BinOp(Expr):
    op: str  # add sub mul div floordiv mod min max pow lt le eq ne and or
    a: Expr
    b: Expr
    dtype: str = INDEX


@dataclass(frozen=True, eq=True)
class Call(Expr):
    """A unary or n-ary math function: exp log sqrt tanh erf abs neg floor ceil round ..."""

    fn: str
    args: tuple[Expr, ...]
    dtype: str = "f32"


@dataclass(frozen=True, eq=True)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr
    dtype: str = "f32"


@dataclass(frozen=True, eq=True)
class Cast(Expr):
    value: Expr
    dtype: str = "f32"


@dataclass(frozen=True, eq=True)
class Load(Expr):
    """Read ``tensor[indices]``; ``tensor`` is a te.Tensor or a loop-IR Buffer (by name)."""

    tensor: Any
    indices: tuple[Expr, ...]
    dtype: str = "f32"


@dataclass(frozen=True, eq=True)
class Reduce(Expr):
    """``combiner`` over ``axes`` of ``body`` (only in compute definitions)."""

    combiner: str  # sum max min prod
    body: Expr
    axes: tuple[Var, ...]
    extents: tuple[int, ...] = field(default=())
    dtype: str = "f32"


COMPARE = ("lt", "le", "eq", "ne")
LOGIC = ("and", "or")
INT_KINDS = ("i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "bool")


def is_int(dtype: str) -> bool:
    return dtype in INT_KINDS


def const(v: int | float | bool, dtype: str | None = None) -> Const:
    if dtype is None:
        dtype = BOOL if isinstance(v, bool) else INDEX if isinstance(v, int) else "f32"
    if dtype == BOOL:
        return Const(bool(v), BOOL)
    return Const(int(v) if is_int(dtype) else float(v), dtype)


def wrap(v: Any, like: str | None = None) -> Expr:
    if isinstance(v, Expr):
        return v
    return const(v, like if like is not None and not (isinstance(v, float) and is_int(like)) else None)


_FOLD: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "min": min,
    "max": max,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "and": lambda a, b: bool(a and b),
    "or": lambda a, b: bool(a or b),
}


def binop(op: str, a: Any, b: Any) -> Expr:
    """Build ``a <op> b`` with constant folding and identities (x+0, x*1, x*0 for ints)."""
    if not isinstance(a, Expr) and isinstance(b, Expr):
        a = wrap(a, b.dtype)
    a = wrap(a)
    b = wrap(b, a.dtype)
    dtype = BOOL if op in COMPARE or op in LOGIC else a.dtype
    if isinstance(a, Const) and isinstance(b, Const):
        if op in _FOLD:
            return const(_FOLD[op](a.value, b.value), dtype)
        if op == "floordiv" and is_int(dtype) and b.value != 0:
            return const(a.value // b.value, dtype)
        if op == "mod" and is_int(dtype) and b.value != 0:
            return const(a.value % b.value, dtype)
        if op == "div" and not is_int(dtype) and b.value != 0:
            return const(a.value / b.value, dtype)
    if op == "add":
        if _is(b, 0):
            return a
        if _is(a, 0):
            return b
    elif op == "sub" and _is(b, 0):
        return a
    elif op == "mul":
        if _is(b, 1):
            return a
        if _is(a, 1):
            return b
        if is_int(dtype) and (_is(a, 0) or _is(b, 0)):
            return const(0, dtype)
    elif op in ("floordiv", "div") and _is(b, 1):
        return a
    elif op == "mod" and _is(b, 1) and is_int(dtype):
        return const(0, dtype)
    return BinOp(op, a, b, dtype)


def _is(e: Expr, v: int) -> bool:
    return isinstance(e, Const) and e.value == v and not isinstance(e.value, bool)


def call(fn: str, *args: Any) -> Expr:
    xs = tuple(wrap(a) for a in args)
    return Call(fn, xs, xs[0].dtype)


def select(cond: Expr, a: Any, b: Any) -> Expr:
    if isinstance(cond, Const):
        return wrap(a) if cond.value else wrap(b)
    a2 = wrap(a, b.dtype if isinstance(b, Expr) else None)
    b2 = wrap(b, a2.dtype)
    return Select(cond, a2, b2, a2.dtype)


def cast(v: Expr, dtype: str) -> Expr:
    if v.dtype == dtype:
        return v
    if isinstance(v, Const):
        return const(v.value, dtype)
    return Cast(v, dtype)


def minimum(a: Any, b: Any) -> Expr:
    return binop("min", a, b)


def maximum(a: Any, b: Any) -> Expr:
    return binop("max", a, b)


def logical_and(*cs: Expr) -> Expr:
    out: Expr = const(True)
    for c in cs:
        out = c if _is_true(out) else binop("and", out, c)
    return out


def _is_true(e: Expr) -> bool:
    return isinstance(e, Const) and e.value is True


# ---- traversal ---------------------------------------------------------------------------
# Every walk below uses an explicit stack: expressions may be arbitrarily deep (fusion bounds
# the depth of what it builds, but no algorithm here relies on Python's recursion limit).


def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, BinOp):
        return (e.a, e.b)
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    if isinstance(e, Cast):
        return (e.value,)
    if isinstance(e, Load):
        return e.indices
    if isinstance(e, Reduce):
        return (e.body,)
    return ()


def walk(e: Expr) -> Iterator[Expr]:
    """``e`` and every sub-expression, outer first (pre-order, children left to right)."""
    stack = [e]
    while stack:
        x = stack.pop()
        yield x
        kids = children(x)
        if kids:
            stack.extend(reversed(kids))


def rebuild(e: Expr, kids: tuple[Expr, ...]) -> Expr:
    """``e`` with its children replaced (re-running the folding constructors)."""
    if isinstance(e, BinOp):
        return binop(e.op, kids[0], kids[1])
    if isinstance(e, Call):
        return Call(e.fn, kids, e.dtype)
    if isinstance(e, Select):
        return select(kids[0], kids[1], kids[2])
    if isinstance(e, Cast):
        return cast(kids[0], e.dtype)
    if isinstance(e, Load):
        return Load(e.tensor, kids, e.dtype)
    if isinstance(e, Reduce):
        return Reduce(e.combiner, kids[0], e.axes, e.extents, e.dtype)
    return e


def transform(e: Expr, fn: Callable[[Expr], Expr | None], expand: bool = False) -> Expr:
    """Bottom-up rewrite: ``fn`` returns a replacement or None to keep the (rebuilt) node.

    With ``expand`` a replacement is itself rewritten (bottom-up, ``fn`` included) before it
    takes the node's place: for rules that substitute a definition which may hold more matches.
    ``fn`` must be a function of its argument: a shared sub-expression is rewritten once."""
    done: dict[int, Expr] = {}
    keep: list[Expr] = []  # keeps visited nodes alive so their ids stay unique
    results: list[Expr] = []
    # (node, phase): phase 0 = children not yet pushed, 1 = children's results are on `results`
    stack: list[tuple[Expr, int]] = [(e, 0)]
    while stack:
        x, phase = stack.pop()
        if phase == 0:
            r = done.get(id(x))
            if r is not None:
                results.append(r)
                continue
            kids = children(x)
            stack.append((x, 1))
            for k in reversed(kids):
                stack.append((k, 0))
            continue
        if phase == 1:
            kids = children(x)
            y = x
            if kids:
                new = tuple(results[len(results) - len(kids):])
                del results[len(results) - len(kids):]
                if any(n is not k for n, k in zip(new, kids, strict=True)):
                    y = rebuild(x, new)
            r = fn(y)
            if r is not None and expand:
                stack.append((x, 2))  # finish x once the replacement is rewritten
                stack.append((r, 0))
                continue
            out = y if r is None else r
        else:  # phase 2: the rewritten replacement is on top of `results`
            out = results.pop()
        done[id(x)] = out
        keep.append(x)
        results.append(out)
    return results[0]


def substitute(e: Expr, env: Mapping[str, Expr]) -> Expr:
    """Replace variables by name."""
    return transform(e, lambda x: env.get(x.name) if isinstance(x, Var) else None)


def same(a: Expr, b: Expr) -> bool:
    """Structural equality (as ``==``) without recursion, for expressions of any depth."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if x is y:
            continue
        if type(x) is not type(y):
            return False
        kx, ky = children(x), children(y)
        if len(kx) != len(ky):
            return False
        if kx:
            if _shallow(x) != _shallow(y):
                return False
            stack.extend(zip(kx, ky, strict=True))
        elif x != y:
            return False
    return True


def _shallow(e: Expr) -> tuple[Any, ...]:
    """The non-expression fields of an inner node (compared by :func:`same`)."""
    if isinstance(e, BinOp):
        return (e.op, e.dtype)
    if isinstance(e, Call):
        return (e.fn, e.dtype)
    if isinstance(e, Load):
        return (e.tensor, e.dtype)
    if isinstance(e, Reduce):
        return (e.combiner, e.axes, e.extents, e.dtype)
    return (e.dtype,)


def postorder(e: Expr) -> Iterator[Expr]:
    """Every distinct node of ``e`` (by identity) once, each after its children, left to right (iterative)."""
    done: set[int] = set()
    stack: list[tuple[Expr, bool]] = [(e, False)]
    while stack:
        x, ready = stack.pop()
        if id(x) in done:
            continue
        kids = children(x)
        if kids and not ready:
            stack.append((x, True))
            stack.extend((k, False) for k in reversed(kids) if id(k) not in done)
            continue
        done.add(id(x))
        yield x


def depth(e: Expr) -> int:
    """Nodes on the longest root-to-leaf path of ``e`` (shared sub-expressions counted once)."""
    memo: dict[int, int] = {}
    for x in postorder(e):
        memo[id(x)] = 1 + max((memo[id(k)] for k in children(x)), default=0)
    return memo[id(e)]


def loads_in(e: Expr) -> list[Load]:
    """Every Load in ``e`` (pre-order)."""
    return [x for x in walk(e) if isinstance(x, Load)]


def free_vars(e: Expr) -> set[str]:
    return {x.name for x in walk(e) if isinstance(x, Var)}


# ---- range-aware index simplification ------------------------------------------------------

Ranges = Mapping[str, tuple[int, int]]  # var name -> inclusive [lo, hi]


def bounds(e: Expr, ranges: Ranges) -> tuple[int, int] | None:
    """Inclusive integer bounds of an index expression, or None if unknown."""
    if not isinstance(e, BinOp):
        return _leaf_bounds(e, ranges)
    memo: dict[int, tuple[int, int] | None] = {}
    stack: list[tuple[Expr, bool]] = [(e, False)]
    while stack:
        x, ready = stack.pop()
        if id(x) in memo:
            continue
        if not isinstance(x, BinOp) or not is_int(x.dtype):
            memo[id(x)] = _leaf_bounds(x, ranges)
        elif ready:
            memo[id(x)] = _binop_bounds(x.op, memo[id(x.a)], memo[id(x.b)])
        else:
            stack.append((x, True))
            stack.append((x.b, False))
            stack.append((x.a, False))
    return memo[id(e)]


def _leaf_bounds(e: Expr, ranges: Ranges) -> tuple[int, int] | None:
    if isinstance(e, Const) and isinstance(e.value, int):
        return (e.value, e.value)
    if isinstance(e, Var):
        return ranges.get(e.name)
    return None


def _binop_bounds(op: str, a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None or b is None:
        return None
    if op == "add":
        return (a[0] + b[0], a[1] + b[1])
    if op == "sub":
        return (a[0] - b[1], a[1] - b[0])
    if op == "mul":
        ps = [x * y for x in a for y in b]
        return (min(ps), max(ps))
    if op == "floordiv" and b[0] == b[1] and b[0] > 0:
        return (a[0] // b[0], a[1] // b[0])
    if op == "mod" and b[0] == b[1] and b[0] > 0:
        return (a[0], a[1]) if 0 <= a[0] and a[1] < b[0] else (0, b[0] - 1)
    if op == "min":
        return (min(a[0], b[0]), min(a[1], b[1]))
    if op == "max":
        return (max(a[0], b[0]), max(a[1], b[1]))
    return None


def _split_multiple(e: Expr, c: int, ranges: Ranges) -> tuple[Expr, Expr] | None:
    """Write ``e`` as ``q*c + r`` with ``r`` provably in [0, c): returns (q, r)."""
    terms = _sum_terms(e)
    q: Expr = const(0)
    r: Expr = const(0)
    for t in terms:
        k = _coeff_multiple(t, c)
        if k is not None:
            q = q + k
        else:
            r = r + t
    rb = bounds(r, ranges)
    if rb is None or rb[0] < 0 or rb[1] >= c:
        return None
    return q, r


def _sum_terms(e: Expr) -> list[Expr]:
    """The operands of a tree of ``add``, left to right."""
    out: list[Expr] = []
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, BinOp) and x.op == "add":
            stack.append(x.b)
            stack.append(x.a)
        else:
            out.append(x)
    return out


def _coeff_multiple(t: Expr, c: int) -> Expr | None:
    """``t / c`` if ``t`` is syntactically a multiple of ``c``."""
    if isinstance(t, Const) and isinstance(t.value, int) and t.value % c == 0:
        return const(t.value // c)
    if isinstance(t, BinOp) and t.op == "mul":
        for x, y in ((t.a, t.b), (t.b, t.a)):
            if isinstance(y, Const) and isinstance(y.value, int) and y.value % c == 0:
                return x * (y.value // c)
    return None


def simplify(e: Expr, ranges: Ranges | None = None) -> Expr:
    """Simplify integer index arithmetic using variable ranges:
    ``(q*c + r)//c -> q`` and ``(q*c + r)%c -> r`` when ``0 <= r < c``; a floordiv/mod of a
    value already within ``[0, c)`` is folded; min/max decided by bounds."""
    rng = ranges or {}

    def rule(x: Expr) -> Expr | None:
        if not isinstance(x, BinOp) or not is_int(x.dtype):
            return None
        if x.op in LOGIC and x.a.dtype == BOOL and x.b.dtype == BOOL:
            # x && true -> x, x && false -> false, x || false -> x, x || true -> true
            for p, q in ((x.a, x.b), (x.b, x.a)):
                if isinstance(p, Const):
                    return q if bool(p.value) == (x.op == "and") else const(bool(p.value))
        if x.op in ("floordiv", "mod") and isinstance(x.b, Const) and isinstance(x.b.value, int) and x.b.value > 0:
            c = x.b.value
            split = _split_multiple(x.a, c, rng)
            if split is not None:
                return split[0] if x.op == "floordiv" else split[1]
            # (a // c1) // c2 -> a // (c1*c2)
            if x.op == "floordiv" and isinstance(x.a, BinOp) and x.a.op == "floordiv" \
                    and isinstance(x.a.b, Const) and isinstance(x.a.b.value, int) and x.a.b.value > 0:
                ab = bounds(x.a.a, rng)
                if ab is not None and ab[0] >= 0:
                    return binop("floordiv", x.a.a, x.a.b.value * c)
        if x.op in ("min", "max"):
            a, b = bounds(x.a, rng), bounds(x.b, rng)
            if a is not None and b is not None:
                if a[1] <= b[0]:
                    return x.a if x.op == "min" else x.b
                if b[1] <= a[0]:
                    return x.b if x.op == "min" else x.a
        if x.op in ("lt", "le"):
            a, b = bounds(x.a, rng), bounds(x.b, rng)
            if a is not None and b is not None:
                if (a[1] < b[0]) if x.op == "lt" else (a[1] <= b[0]):
                    return const(True)
                if (a[0] >= b[1]) if x.op == "lt" else (a[0] > b[1]):
                    return const(False)
        return None

    prev = None
    out = e
    for _ in range(4):  # a few rounds reach a fixed point in practice
        prev, out = out, transform(out, rule)
        if out is prev or same(out, prev):
            break
    return out


_SYM = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%", "lt": "<",
        "le": "<=", "eq": "==", "ne": "!=", "and": "&&", "or": "||"}


def to_str(e: Expr) -> str:
    """Readable text form."""
    uses: dict[int, int] = {}  # parents still to be built per node: a child's text is freed once used
    for x in _unique_nodes(e):
        for k in children(x):
            uses[id(k)] = uses.get(id(k), 0) + 1
    memo: dict[int, str] = {}
    for x in postorder(e):
        kids = children(x)
        memo[id(x)] = _node_str(x, [memo[id(k)] for k in kids])
        for k in kids:
            uses[id(k)] -= 1
            if not uses[id(k)]:
                del memo[id(k)]
    return memo[id(e)]


def _unique_nodes(e: Expr) -> list[Expr]:
    """Every distinct node of ``e`` (by identity), each once."""
    seen = {id(e)}
    out = [e]
    stack = [e]
    while stack:
        for k in children(stack.pop()):
            if id(k) not in seen:
                seen.add(id(k))
                out.append(k)
                stack.append(k)
    return out


def _node_str(e: Expr, kids: list[str]) -> str:
    """Text of one node given its children's texts."""
    if isinstance(e, Const):
        return repr(e.value) if e.dtype in (INDEX, BOOL) else f"{e.value!r}:{e.dtype}"
    if isinstance(e, Var):
        return e.name
    if isinstance(e, BinOp):
        sym = _SYM.get(e.op)
        return f"({kids[0]} {sym} {kids[1]})" if sym else f"{e.op}({kids[0]}, {kids[1]})"
    if isinstance(e, Call):
        return f"{e.fn}({', '.join(kids)})"
    if isinstance(e, Select):
        return f"select({kids[0]}, {kids[1]}, {kids[2]})"
    if isinstance(e, Cast):
        return f"{e.dtype}({kids[0]})"
    if isinstance(e, Load):
        name = getattr(e.tensor, "name", str(e.tensor))
        return f"{name}[{', '.join(kids)}]"
    if isinstance(e, Reduce):
        ax = ", ".join(f"{a.name}<{n}" for a, n in zip(e.axes, e.extents, strict=False))
        return f"{e.combiner}({kids[0]} over {ax})"
    return repr(e)


# ---- linear forms of index expressions -----------------------------------------------------


def linear_form(e: Expr) -> tuple[dict[Expr, int], int] | None:
    """Write an integer index expression as ``sum(coef * atom) + const`` where atoms are
    variables or floordiv/mod terms; ``(x//c)*c*k + (x%c)*k`` collapses to ``x*k``.
    Returns None for non-affine expressions (products of variables, loads...)."""
    terms: dict[Expr, int] = {}
    const_part = 0

    def add(root: Expr, k0: int) -> bool:
        nonlocal const_part
        stack = [(root, k0)]  # explicit stack: sums may be arbitrarily long
        while stack:
            x, k = stack.pop()
            if isinstance(x, Const) and isinstance(x.value, int) and not isinstance(x.value, bool):
                const_part += k * x.value
            elif isinstance(x, Var):
                terms[x] = terms.get(x, 0) + k
            elif isinstance(x, BinOp) and x.op in ("add", "sub"):
                stack.append((x.b, k if x.op == "add" else -k))
                stack.append((x.a, k))
            elif isinstance(x, BinOp) and x.op == "mul":
                if isinstance(x.b, Const) and isinstance(x.b.value, int):
                    stack.append((x.a, k * x.b.value))
                elif isinstance(x.a, Const) and isinstance(x.a.value, int):
                    stack.append((x.b, k * x.a.value))
                else:
                    return False
            elif isinstance(x, BinOp) and x.op in ("floordiv", "mod") and isinstance(x.b, Const):
                terms[x] = terms.get(x, 0) + k
            else:
                return False
        return True

    if not add(e, 1):
        return None
    changed = True
    while changed:  # (x//c)*c*k + (x%c)*k -> x*k
        changed = False
        for atom, k in list(terms.items()):
            if isinstance(atom, BinOp) and atom.op == "mod" and k and atom in terms:
                c = atom.b.value  # type: ignore[attr-defined]
                div = BinOp("floordiv", atom.a, atom.b, atom.dtype)
                if terms.get(div, 0) == k * c:
                    del terms[atom]
                    del terms[div]
                    sub = linear_form(atom.a)
                    if sub is None:
                        terms[atom.a] = terms.get(atom.a, 0) + k
                    else:
                        for a2, k2 in sub[0].items():
                            terms[a2] = terms.get(a2, 0) + k * k2
                        const_part += k * sub[1]
                    changed = True
                    break
    return {a: k for a, k in terms.items() if k}, const_part


def stride_along(e: Expr, var: str) -> int | None:
    """The constant step of index ``e`` per unit step of ``var`` (0 if independent), or None
    when ``e`` is not affine in ``var`` (e.g. ``var`` appears inside a floordiv/mod)."""
    lf = linear_form(e)
    if lf is None:
        return None if var in free_vars(e) else 0
    terms, _ = lf
    step = 0
    for atom, k in terms.items():
        if isinstance(atom, Var):
            if atom.name == var:
                step += k
        elif var in free_vars(atom):
            return None
    return step
