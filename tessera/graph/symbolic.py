"""Symbolic tensor dimensions.

A dimension is either a plain ``int`` or a :class:`Sym`: an integer polynomial over named
symbols (``batch``, ``seq``) and opaque floor-division / modulo atoms. Arithmetic on ``Sym``
normalizes eagerly, and a result that turns out constant is returned as a plain ``int``, so
``seq*2 - seq - seq`` is ``0``. Expressions parse back from their printed form.
"""

from __future__ import annotations

import ast
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


def parse_dim(text: str) -> Dim:
    """Parse ``"seq*2"``, ``"(seq+1)//2"`` or ``"128"`` into a Dim (safe: no eval)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"cannot parse dimension {text!r}") from e

    def walk(n: ast.AST) -> Dim:
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.Name):
            return Sym.var(n.id)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -walk(n.operand)
        if isinstance(n, ast.BinOp):
            a, b = walk(n.left), walk(n.right)
            if isinstance(n.op, ast.Add):
                return a + b
            if isinstance(n.op, ast.Sub):
                return a - b
            if isinstance(n.op, ast.Mult):
                return a * b
            if isinstance(n.op, (ast.FloorDiv, ast.Mod)):
                if not isinstance(b, int):
                    raise ValueError(f"divisor must be a constant in {text!r}")
                return a // b if isinstance(n.op, ast.FloorDiv) else a % b
        raise ValueError(f"unsupported syntax in dimension {text!r}")

    return walk(tree.body)
