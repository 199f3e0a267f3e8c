"""Graph-to-graph optimization passes.

Every pass is a function ``Graph -> Graph`` that returns a new graph and leaves its input
untouched (constant arrays are shared between the two and never modified in place).
:func:`optimize` runs a pipeline of passes to a fixed point, verifying after each pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tessera.errors import GraphError
from tessera.graph.ir import Graph
from tessera.graph.passes._rewrite import attr_key
from tessera.graph.passes.eliminate_common_subexpressions import eliminate_common_subexpressions
from tessera.graph.passes.eliminate_dead_code import eliminate_dead_code
from tessera.graph.passes.fold_batchnorm import fold_batchnorm
from tessera.graph.passes.fold_constants import fold_constants
from tessera.graph.passes.simplify_reshapes import simplify_reshapes
from tessera.graph.verify import verify

Pass = Callable[[Graph], Graph]
# (pass name, text form of the graph it produced)
DebugHook = Callable[[str, str], None]

DEFAULT_PASSES: tuple[Pass, ...] = (
    fold_constants,
    simplify_reshapes,
    fold_batchnorm,
    eliminate_common_subexpressions,
    eliminate_dead_code,
)


class PassLog:
    """A debug hook for :func:`optimize` that records every pass's output text, in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def __call__(self, name: str, text: str) -> None:
        self.entries.append((name, text))

    def texts(self, name: str) -> list[str]:
        """The recorded outputs of the pass called ``name``."""
        return [t for n, t in self.entries if n == name]


def optimize(
    g: Graph,
    passes: Sequence[Pass] = DEFAULT_PASSES,
    debug: DebugHook | None = None,
    max_rounds: int = 10,
    check: bool = True,
) -> Graph:
    """Run ``passes`` in order, repeatedly, until a whole round changes nothing (or
    ``max_rounds`` rounds ran). With ``check`` each result is verified and a pass that
    produces an invalid graph raises GraphError naming it. ``debug(name, text)`` is called
    with every pass's result."""
    current = g
    for _ in range(max_rounds):
        before = _fingerprint(current)
        for p in passes:
            name = getattr(p, "__name__", repr(p))
            result = p(current)
            if check:
                try:
                    verify(result)
                except GraphError as e:
                    raise GraphError(f"pass {name} produced an invalid graph: {e}") from e
            if debug is not None:
                debug(name, str(result))
            current = result
        if _fingerprint(current) == before:
            break
    return current


def _fingerprint(g: Graph) -> tuple:
    """Structure of a graph: passes only ever add values under new names, so equal structure
    means nothing changed."""
    nodes = tuple(
        (n.op, tuple(n.inputs), tuple(n.outputs), tuple(sorted((k, attr_key(v)) for k, v in n.attrs.items())))
        for n in g.nodes
    )
    return (nodes, tuple(g.outputs), tuple(sorted(g.constants)))


__all__ = [
    "DEFAULT_PASSES",
    "PassLog",
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
    "fold_batchnorm",
    "fold_constants",
    "optimize",
    "simplify_reshapes",
]
