"""Symbolic tensor dimensions.

A dimension is either a plain ``int`` or a :class:`Sym`: an integer polynomial over named
symbols (``batch``, ``seq``) and opaque floor-division / modulo atoms. Arithmetic on ``Sym``
normalizes eagerly, and a result that turns out constant is returned as a plain ``int``, so
``seq*2 - seq - seq`` is ``0``. Expressions parse back from their printed form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

Dim = Union[int, "Sym"]


@dataclass(frozen=True, order=True)
class _Div:
    """Opaque atom ``num // den`` (kind "//") or ``num % den`` (kind "%")."""

    num: Sym
    den: int
    kind: str

    def __str__(self) -> str:
        return f"({self.num}){self.kind}{self.den}"

    def evaluate(self, env: Mapping[str, int]) -> int:
        n = evaluate(self.num, env)
        return n // self.den if self.kind == "//" else n % self.den


Atom = str | _Div
Monomial = tuple[Atom, ...]  # sorted atoms; () is the constant term


def _atom_key(a: Atom) -> str:
    return a if isinstance(a, str) else str(a)


class Sym:
    """A symbolic integer expression. Construct with ``Sym.var("batch")``."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: Mapping[Monomial, int]) -> None:
        self.terms: dict[Monomial, int] = {m: c for m, c in terms.items() if c != 0}
        self._hash = hash(tuple(sorted(((tuple(map(_atom_key, m)), c) for m, c in self.terms.items()))))

    @staticmethod
    def var(name: str) -> Sym:
        if not name.isidentifier():
            raise ValueError(f"symbol name must be an identifier, got {name!r}")
        return Sym({(name,): 1})

    @staticmethod
    def _norm(terms: Mapping[Monomial, int]) -> Dim:
        clean = {m: c for m, c in terms.items() if c != 0}
        if not clean:
            return 0
        if list(clean) == [()]:
            return clean[()]
        return Sym(clean)

    @staticmethod
    def _terms_of(x: Dim) -> dict[Monomial, int]:
        return dict(x.terms) if isinstance(x, Sym) else ({(): int(x)} if x else {})

    def __add__(self, other: Dim) -> Dim:
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        t = self._terms_of(self)
        for m, c in self._terms_of(other).items():
            t[m] = t.get(m, 0) + c
        return self._norm(t)

    __radd__ = __add__

    def __neg__(self) -> Dim:
        return self._norm({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Dim) -> Dim:
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other: Dim) -> Dim:
        return (-self) + other

    def __mul__(self, other: Dim) -> Dim:
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        out: dict[Monomial, int] = {}
        for m1, c1 in self._terms_of(self).items():
            for m2, c2 in self._terms_of(other).items():
                m = tuple(sorted(m1 + m2, key=_atom_key))
                out[m] = out.get(m, 0) + c1 * c2
        return self._norm(out)

    __rmul__ = __mul__

    def __floordiv__(self, other: Dim) -> Dim:
        if not isinstance(other, int):
            raise TypeError(f"symbolic dims can only be divided by an int, got {other!r}")
        if other == 1:
            return self
        if other <= 0:
            raise ZeroDivisionError("division of a dim by a non-positive number")
        if all(c % other == 0 for c in self.terms.values()):
            return self._norm({m: c // other for m, c in self.terms.items()})
        return Sym({(_Div(self, other, "//"),): 1})

    def __mod__(self, other: Dim) -> Dim:
        if not isinstance(other, int):
            raise TypeError(f"symbolic dims can only be reduced modulo an int, got {other!r}")
        if all(c % other == 0 for c in self.terms.values()):
            return 0
        return Sym({(_Div(self, other, "%"),): 1})

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sym):
            return self._hash == other._hash and _canon(self) == _canon(other)
        return False

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: object) -> bool:
        return str(self) < str(other)

    def __str__(self) -> str:
        parts: list[str] = []
        for m, c in sorted(self.terms.items(), key=lambda mc: (len(mc[0]) == 0, tuple(map(_atom_key, mc[0])))):
            body = "*".join(_atom_key(a) for a in m)
            if not body:
                text = str(abs(c))
            elif abs(c) == 1:
                text = body
            else:
                text = f"{body}*{abs(c)}"
            if parts:
                parts.append(("- " if c < 0 else "+ ") + text)
            else:
                parts.append(("-" if c < 0 else "") + text)
        return " ".join(parts).replace(" ", "")

    def __repr__(self) -> str:
        return f"Sym({self})"

    @property
    def symbols(self) -> set[str]:
        out: set[str] = set()
        for m in self.terms:
            for a in m:
                out |= {a} if isinstance(a, str) else a.num.symbols
        return out


def _canon(s: Sym) -> list[tuple[tuple[str, ...], int]]:
    return sorted((tuple(map(_atom_key, m)), c) for m, c in s.terms.items())


def is_static(d: Dim) -> bool:
    return isinstance(d, int)


def evaluate(d: Dim, env: Mapping[str, int]) -> int:
    """Value of ``d`` once every symbol is bound in ``env``; KeyError names a missing symbol."""
    if isinstance(d, int):
        return d
    total = 0
    for m, c in d.terms.items():
        v = c
        for a in m:
            v *= env[a] if isinstance(a, str) else a.evaluate(env)
        total += v
    return total


def substitute(d: Dim, env: Mapping[str, Dim]) -> Dim:
    """Replace the symbols found in ``env`` (values may be ints or expressions)."""
    if isinstance(d, int):
        return d
    total: Dim = 0
    for m, c in d.terms.items():
        v: Dim = c
        for a in m:
            if isinstance(a, str):
                v = v * env.get(a, Sym.var(a))
            else:
                num = substitute(a.num, env)
                v = v * (num // a.den if a.kind == "//" else num % a.den)
        total = total + v
    return total


def symbol_name(d: Dim) -> str | None:
    """The symbol's name when ``d`` is a plain symbol (``batch``), else None."""
    if isinstance(d, Sym) and len(d.terms) == 1:
        ((mono, coef),) = d.terms.items()
        if coef == 1 and len(mono) == 1 and isinstance(mono[0], str):
            return mono[0]
    return None


# A dim expression from a file may be long, but not this long: bounds the parser's work (the
# polynomial products it normalizes) on hostile input. Real dims are a handful of tokens.
MAX_DIM_TOKENS = 4096
_TOKEN = re.compile(r"\s*(?:(\d+)|([^\W\d]\w*)|(//|[-+*%()]))")
_PREC = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2, "neg": 3}


def parse_dim(text: str) -> Dim:
    """Parse ``"seq*2"``, ``"(seq+1)//2"`` or ``"128"`` into a Dim (safe: no eval).

    An operator-precedence parser with explicit stacks: no recursion, linear in the text."""
    tokens = _tokenize(text)
    values: list[Dim] = []
    ops: list[str] = []
    expect_operand = True
    for kind, tok in tokens:
        if expect_operand:
            if kind == "int":
                values.append(int(tok))
                expect_operand = False
            elif kind == "name":
                values.append(Sym.var(tok))
                expect_operand = False
            elif tok == "-":
                ops.append("neg")
            elif tok == "(":
                ops.append("(")
            else:
                raise ValueError(f"cannot parse dimension {text!r}")
        elif kind == "op" and tok == ")":
            while ops and ops[-1] != "(":
                _apply(ops.pop(), values, text)
            if not ops:
                raise ValueError(f"cannot parse dimension {text!r} (unbalanced parentheses)")
            ops.pop()
        elif kind == "op" and tok in _PREC:
            while ops and ops[-1] != "(" and _PREC[ops[-1]] >= _PREC[tok]:
                _apply(ops.pop(), values, text)
            ops.append(tok)
            expect_operand = True
        else:
            raise ValueError(f"cannot parse dimension {text!r}")
    if expect_operand:
        raise ValueError(f"cannot parse dimension {text!r}")
    while ops:
        op = ops.pop()
        if op == "(":
            raise ValueError(f"cannot parse dimension {text!r} (unbalanced parentheses)")
        _apply(op, values, text)
    return values[0]


def _tokenize(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"unsupported syntax in dimension {text!r}")
        number, name, op = m.groups()
        out.append(("int", number) if number else ("name", name) if name else ("op", op))
        pos = m.end()
        if len(out) > MAX_DIM_TOKENS:
            raise ValueError(f"dimension expression longer than {MAX_DIM_TOKENS} tokens: {text[:80]!r}...")
    if not out:
        raise ValueError(f"cannot parse dimension {text!r}")
    return out


def _apply(op: str, values: list[Dim], text: str) -> None:
    """Pop an operator's operands from ``values`` and push its result."""
    if op == "neg":
        values.append(-values.pop())
        return
    b, a = values.pop(), values.pop()
    if op == "+":
        values.append(a + b)
    elif op == "-":
        values.append(a - b)
    elif op == "*":
        values.append(a * b)
    else:
        if not isinstance(b, int):
            raise ValueError(f"divisor must be a constant in {text!r}")
        if b <= 0 and isinstance(a, Sym):
            raise ValueError(f"divisor must be positive in {text!r}")
        if b == 0:
            raise ValueError(f"division by zero in {text!r}")
        values.append(a // b if op == "//" else a % b)
