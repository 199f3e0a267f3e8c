"""Schedule primitives and the loop nest they transform.

A schedule is an ordered list of :class:`Step` records (primitive name + JSON-able args),
one list per stage; replaying the steps on a fresh :class:`LoopNest` gives the same loops.

Primitives: ``split(loop, factor)``, ``fuse(outer, inner)``, ``reorder(loops...)``,
``parallel(loop)``, ``vectorize(loop)``, ``unroll(loop)``, ``cache_write(at)`` (accumulate
into a local tile allocated inside loop ``at``; ``None`` = outside every loop),
``pack(factor_index, axis, padded_extent, tile)`` (cache_read: materialize one factor of the
reduction body as panels contiguous along ``axis``, zero-padded to ``padded_extent``).
Inlining decisions are made when stages are built (tessera.loop.stages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tessera.loop.expr import Expr, Var, substitute

PRIMITIVES = ("split", "fuse", "reorder", "parallel", "vectorize", "unroll", "cache_write", "pack", "tensorize")


@dataclass(frozen=True)
class Step:
    """One primitive application: ``name`` and its arguments (JSON-serializable)."""

    name: str
    args: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in PRIMITIVES:
            raise ValueError(f"unknown schedule primitive {self.name!r}")

    def to_json(self) -> list[Any]:
        return [self.name, *self.args]

    @staticmethod
    def from_json(item: list[Any]) -> Step:
        return Step(item[0], tuple(item[1:]))

    def __str__(self) -> str:
        return f"{self.name}({', '.join(map(repr, self.args))})"


@dataclass
class Loop:
    name: str
    extent: int
    reduce: bool
    kind: str = "serial"


@dataclass
class PackSpec:
    """A pack recorded with the loop state at the time it was requested."""

    factor: int
    axis: str  # a loop name at that time (possibly fused)
    padded: int
    tile: int  # the axis is stored as [axis // tile, ..., axis % tile]: one contiguous panel per tile
    axis_expr: dict[str, Expr]
    extents: dict[str, int]  # loop name -> extent at that time
    sub_index: int  # substitutions applied after this pack map its loop vars to final loops


@dataclass
class LoopNest:
    """Loops of one stage (outermost first) and each original axis as a loop-var expression."""

    loops: list[Loop]
    axis_expr: dict[str, Expr]
    axis_extent: dict[str, int]
    cache_at: str | None = None  # cache_write position ("" = outside all loops)
    packs: list[PackSpec] = field(default_factory=list)
    tensorize: str | None = None
    subs: list[dict[str, Expr]] = field(default_factory=list)  # loop-var substitutions, in order

    @staticmethod
    def create(spatial: list[tuple[str, int]], reduce: list[tuple[str, int]]) -> LoopNest:
        loops = [Loop(n, e, False) for n, e in spatial] + [Loop(n, e, True) for n, e in reduce]
        return LoopNest(loops, {n: Var(n) for n, _ in spatial + reduce},
                        {n: e for n, e in spatial + reduce})

    def find(self, name: str) -> int:
        for k, lp in enumerate(self.loops):
            if lp.name == name:
                return k
        raise KeyError(f"no loop {name!r} (loops: {[lp.name for lp in self.loops]})")

    def loop(self, name: str) -> Loop:
        return self.loops[self.find(name)]

    def _subst(self, env: dict[str, Expr]) -> None:
        self.axis_expr = {a: substitute(e, env) for a, e in self.axis_expr.items()}
        self.subs.append(env)

    def final_expr(self, var: str, since: int) -> Expr:
        """Loop variable ``var`` of an earlier state (``since`` substitutions ago) in final loops."""
        e: Expr = Var(var)
        for env in self.subs[since:]:
            e = substitute(e, env)
        return e

    def guards(self) -> list[tuple[str, Expr, int]]:
        """(axis, expression, extent) for axes whose loops over-cover them (non-dividing splits)."""
        out = []
        for a, e in self.axis_expr.items():
            span = 1
            for v in _vars(e):
                span *= self.loop(v).extent
            if span > self.axis_extent[a] and len(_vars(e)) > 0:
                out.append((a, e, self.axis_extent[a]))
        return out

    def apply(self, step: Step) -> None:
        getattr(self, "_" + step.name)(*step.args)

    def _split(self, name: str, factor: int) -> None:
        k = self.find(name)
        lp = self.loops[k]
        if factor <= 0:
            raise ValueError(f"split factor must be positive, got {factor}")
        outer = Loop(f"{name}_o", -(-lp.extent // factor), lp.reduce)
        inner = Loop(f"{name}_i", factor, lp.reduce)
        self.loops[k:k + 1] = [outer, inner]
        self._subst({name: Var(outer.name) * factor + Var(inner.name)})

    def _fuse(self, outer: str, inner: str) -> None:
        k = self.find(outer)
        if k + 1 >= len(self.loops) or self.loops[k + 1].name != inner:
            raise ValueError(f"fuse needs adjacent loops, got {outer!r}, {inner!r}")
        a, b = self.loops[k], self.loops[k + 1]
        if a.reduce != b.reduce:
            raise ValueError("cannot fuse a spatial loop with a reduction loop")
        f = Loop(f"{outer}_{inner}", a.extent * b.extent, a.reduce)
        self.loops[k:k + 2] = [f]
        self._subst({outer: Var(f.name) // b.extent, inner: Var(f.name) % b.extent})

    def _reorder(self, *names: str) -> None:
        idx = sorted(self.find(n) for n in names)
        by_name = {lp.name: lp for lp in self.loops}
        for k, n in zip(idx, names, strict=True):
            self.loops[k] = by_name[n]

    def _parallel(self, name: str) -> None:
        self.loop(name).kind = "parallel"

    def _vectorize(self, name: str) -> None:
        self.loop(name).kind = "vectorized"

    def _unroll(self, name: str) -> None:
        self.loop(name).kind = "unrolled"

    def _cache_write(self, at: str) -> None:
        if at:
            self.find(at)
        self.cache_at = at

    def _pack(self, factor: int, axis: str, padded_extent: int, tile: int = 0) -> None:
        self.find(axis)
        tile = int(tile) or int(padded_extent)
        if padded_extent % tile:
            raise ValueError(f"pack tile {tile} does not divide the padded extent {padded_extent}")
        self.packs.append(PackSpec(int(factor), axis, int(padded_extent), tile, dict(self.axis_expr),
                                   {lp.name: lp.extent for lp in self.loops}, len(self.subs)))

    def _tensorize(self, intrinsic: str) -> None:
        self.tensorize = intrinsic


def _vars(e: Expr) -> set[str]:
    from tessera.loop.expr import free_vars

    return free_vars(e)


def replay(nest: LoopNest, steps: list[Step]) -> LoopNest:
    for s in steps:
        nest.apply(s)
    return nest
