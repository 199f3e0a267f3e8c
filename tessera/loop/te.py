"""Tensor expressions: how compute definitions say *what* an operator computes.

A :class:`Tensor` is either a placeholder (a kernel input) or the result of :func:`compute`:
``out[i, j] = expr(i, j)``, where the expression may load other tensors and contain one
:func:`reduce` over reduction axes. Definitions say nothing about loop order, tiling or
vectorization: that is the schedule's job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tessera.loop.expr import Expr, Load, Reduce, Var, wrap

_counter = [0]


def _fresh(hint: str) -> str:
    _counter[0] += 1
    return f"{hint}{_counter[0]}"


@dataclass(eq=False)
class Tensor:
    """A tensor of a compute definition. ``axes``/``body`` are set for computed tensors."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    axes: tuple[Var, ...] = ()
    body: Expr | None = None
    tag: str = ""  # "injective", "reduction", "opaque" ...
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_placeholder(self) -> bool:
        return self.body is None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, idx: Any) -> Expr:
        if not isinstance(idx, tuple):
            idx = (idx,)
        if len(idx) != len(self.shape):
            raise IndexError(f"{self.name} has rank {len(self.shape)}, indexed with {len(idx)} indices")
        return Load(self, tuple(wrap(i) for i in idx), self.dtype)

    def __repr__(self) -> str:
        return f"Tensor({self.name}, {list(self.shape)}, {self.dtype})"


def placeholder(shape: Sequence[int], dtype: str, name: str = "in") -> Tensor:
    return Tensor(name, tuple(int(d) for d in shape), dtype)


def compute(
    shape: Sequence[int], fn: Callable[..., Expr], name: str = "t", dtype: str | None = None, tag: str = ""
) -> Tensor:
    """``out[axes] = fn(*axes)``. The dtype defaults to the expression's dtype."""
    axes = tuple(Var(_fresh("i")) for _ in shape)
    body = wrap(fn(*axes))
    if dtype is not None and body.dtype != dtype:
        from tessera.loop.expr import cast

        body = cast(body, dtype)
    if not tag:
        tag = "reduction" if isinstance(body, Reduce) or _has_reduce(body) else "injective"
    return Tensor(_fresh(name), tuple(int(d) for d in shape), body.dtype, axes, body, tag)


def _has_reduce(e: Expr) -> bool:
    from tessera.loop.expr import walk

    return any(isinstance(x, Reduce) for x in walk(e))


def reduce_axis(extent: int, hint: str = "r") -> tuple[Var, int]:
    """A reduction axis and its extent, for :func:`reduce`."""
    return Var(_fresh(hint)), int(extent)


def reduce(combiner: str, body: Expr, *axes: tuple[Var, int]) -> Reduce:
    """``combiner`` (sum, max, min, prod) of ``body`` over reduction ``axes``."""
    if combiner not in ("sum", "max", "min", "prod"):
        raise ValueError(f"unknown combiner {combiner!r}")
    return Reduce(combiner, body, tuple(a for a, _ in axes), tuple(n for _, n in axes), body.dtype)


def rsum(body: Expr, *axes: tuple[Var, int]) -> Reduce:
    return reduce("sum", body, *axes)


def rmax(body: Expr, *axes: tuple[Var, int]) -> Reduce:
    return reduce("max", body, *axes)


def rmin(body: Expr, *axes: tuple[Var, int]) -> Reduce:
    return reduce("min", body, *axes)


def inputs_of(t: Tensor) -> list[Tensor]:
    """Tensors loaded directly by ``t``'s body (in first-use order)."""
    from tessera.loop.expr import walk

    seen: dict[int, Tensor] = {}
    if t.body is not None:
        for e in walk(t.body):
            if isinstance(e, Load) and isinstance(e.tensor, Tensor):
                seen.setdefault(id(e.tensor), e.tensor)
    return list(seen.values())


def topo_order(outputs: Sequence[Tensor]) -> list[Tensor]:
    """All tensors reachable from ``outputs``, producers first (depth-first post-order, iterative)."""
    order: list[Tensor] = []
    seen: set[int] = set()
    for o in outputs:
        if id(o) in seen:
            continue
        seen.add(id(o))
        stack: list[tuple[Tensor, list[Tensor]]] = [(o, inputs_of(o)[::-1])]
        while stack:
            t, pending = stack[-1]
            while pending and id(pending[-1]) in seen:
                pending.pop()
            if pending:
                s = pending.pop()
                seen.add(id(s))
                stack.append((s, inputs_of(s)[::-1]))
            else:
                stack.pop()
                order.append(t)
    return order
