"""Operator fusion: partition a static-shape graph into fusion groups (one kernel each).

Every decision is generic: it depends only on each operator's compute-definition *pattern*
(elementwise / injective / reduction / anchor / opaque, see :mod:`tessera.loop.compute`),
on shapes and on the dataflow, never on operator names. Rules:

- **view**: an injective op whose output is a pure reinterpretation of its input's row-major
  bytes (same dtype and element count, and its compute definition loads the input at the
  output's own linear index; Reshape, Flatten, Squeeze, Identity...) is a group of kind
  ``"view"``: no kernel, the runtime aliases the buffer. If it reads a graph input or constant,
  or writes a graph output, it is an ordinary injective op instead (a copy kernel).
- **anchor** (matmul, conv): absorbs its injective, single-consumer operand producers
  (transpose, pad, slice: inlined into its loads; never elementwise ones, they would be
  recomputed per output tile), then its chain of same-shape elementwise consumers (the
  epilogue: bias, scale/shift, activation, residual add). Operands of epilogue ops that come
  from elsewhere are group inputs, or inlined when they are single-use same-shape elementwise
  chains themselves. An epilogue may also swallow a closed elementwise diamond (GELU written
  as ``x * (1 + erf(x / c)) / 2``): a value with several consumers that all re-converge.
- **reduction** (softmax, norms, reduce, pools): absorbs single-consumer elementwise/injective
  producers and same-shape elementwise consumers.
- **elementwise/injective** chains fuse along single-consumer edges; an elementwise consumer
  only when it does not broadcast the fused operand (that would recompute it), an injective one
  when it does not enlarge its inputs (``Expand``/``Tile`` would recompute them).
- **opaque** ops are alone. A group never holds two anchors/reductions, and no merge may create
  a cycle between groups. A value that is a graph output, or has several consumers (outside a
  closed diamond), always ends a group.
- **depth**: no dataflow path inside a group is longer than ``MAX_FUSED_DEPTH`` ops, and no
  inlined expression has more than ``MAX_FUSED_SIZE`` nodes (bounds the depth and size of the
  generated expressions; longer chains become several kernels).

``partition(g, explain=lines)`` appends one line per producer->consumer edge left unfused,
with the reason; ``TESSERA_EXPLAIN_FUSION=1`` logs the same lines on logger ``tessera.fusion``.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np

from tessera.errors import CompileError, GraphError
from tessera.graph.ir import Graph, Node
from tessera.graph.registry import get_op, normalize_attrs
from tessera.loop.compute import ComputeContext, get_compute
from tessera.loop.expr import BinOp, Cast, Const, Expr, Load, Select, Var, simplify, walk
from tessera.loop.stages import build_stages
from tessera.loop.te import Tensor, placeholder

LOG = logging.getLogger("tessera.fusion")
EXPLAIN_ENV = "TESSERA_EXPLAIN_FUSION"
HEAVY = ("anchor", "reduction")
MAX_DIAMOND = 16  # nodes a closed elementwise diamond may add to a group at once
# Ops on the longest dataflow path inside one group. Each fused op nests its expression into its
# consumer's, so a chain of n fused ops becomes one C expression about n (times a few) levels
# deep: the code generators walk expressions recursively and C compilers slow down sharply (GCC
# may exhaust its stack) on expressions thousands of levels deep. A longer chain is split into
# further kernels (one store and load per split). 32 is four times the longest chain any zoo
# model fuses, so real models fuse exactly as without the bound.
MAX_FUSED_DEPTH = 32
# Nodes of a group's largest expression once inlined as a tree. Many definitions read their input
# more than once (Gelu, Mish, Elu: 2-3 loads), so a fused chain of them grows exponentially as a
# tree (3**32 for 32 Mish) although it stays a small DAG: the code generators expand the tree.
# Zoo models stay far below (see tests/compiler/test_deep_graphs.py).
MAX_FUSED_SIZE = 4096


@dataclass(eq=False)
class FusionGroup:
    """A set of nodes compiled into one kernel (``kind == "kernel"``) or an aliasing view."""

    id: int
    nodes: list[Node]  # topological order
    inputs: list[str]  # values read from outside the group, first-use order
    outputs: list[str]  # values produced here and used outside, or graph outputs
    kind: str  # "kernel" | "view"
    anchor: Node | None = None  # the anchor node, else the main reduction node, else None
    patterns: list[str] = field(default_factory=list)  # each node's pattern ("view" for views)

    def __repr__(self) -> str:
        ops = "+".join(n.op for n in self.nodes)
        return f"FusionGroup({self.id}, {self.kind}, {ops}, in={self.inputs}, out={self.outputs})"


def missing_compute(g: Graph) -> dict[str, list[str]]:
    """Op type -> names of the nodes whose op has no compute definition (or is unknown)."""
    out: dict[str, list[str]] = {}
    for i, node in enumerate(g.nodes):
        try:
            cdef = get_compute(node.op)
        except GraphError:  # unknown operator
            cdef = None
        if cdef is None:
            out.setdefault(node.op, []).append(node.name or f"#{i}")
    return out


def partition(g: Graph, explain: list[str] | None = None) -> list[FusionGroup]:
    """Partition the (static-shape, optimized) graph ``g`` into fusion groups, in a
    topological order of the groups. Raises CompileError listing every op type without a
    compute definition, or if a shape is not static."""
    missing = missing_compute(g)
    if missing:
        parts = []
        for op, names in sorted(missing.items()):
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            parts.append(f"{op} x{len(names)} (nodes: {shown})")
        total = sum(len(v) for v in missing.values())
        raise CompileError(
            f"no compute definition for {len(missing)} operator type(s), {total} node(s): " + "; ".join(parts)
        )
    for name, t in g.types.items():
        if not t.is_static:
            raise CompileError(f"fusion needs static shapes (specialize first): {name!r} has type {t}")
    p = _Partitioner(g)
    groups = p.run()
    lines = p.explain_lines()
    if explain is not None:
        explain.extend(lines)
    if os.environ.get(EXPLAIN_ENV, "") not in ("", "0"):
        _ensure_log_visible()
        for line in lines:
            LOG.info("%s", line)
    return groups


def _ensure_log_visible() -> None:
    if LOG.getEffectiveLevel() > logging.INFO:
        LOG.setLevel(logging.INFO)
    if not LOG.hasHandlers():
        LOG.addHandler(logging.StreamHandler())


# ---- views -------------------------------------------------------------------------------------


def build_compute(g: Graph, node: Node) -> tuple[list[Tensor | None], list[Tensor]]:
    """Instantiate ``node``'s compute definition on fresh placeholders (one per input)."""
    cdef = get_compute(node.op)
    assert cdef is not None
    ins: list[Tensor | None] = []
    in_types = []
    consts = []
    for k, v in enumerate(node.inputs):
        if not v:
            ins.append(None)
            in_types.append(None)
            consts.append(None)
            continue
        t = g.types[v]
        ins.append(placeholder(_shape_of(t.shape), t.dtype.value, f"in{k}"))
        in_types.append(t)
        consts.append(g.constants.get(v))
    out_types = [g.types[o] for o in node.outputs if o]
    attrs = normalize_attrs(get_op(node.op), node)
    ctx = ComputeContext(ins, attrs, in_types, out_types, consts, node.name)
    return ins, cdef.fn(ctx)


def expression_cost(g: Graph, node: Node) -> tuple[int, list[int]]:
    """Tree size of ``node``'s inlined expression and how often it loads each input (fusion
    multiplies producers' sizes by these counts); ``(1, [1, ...])`` if it cannot be built here."""
    try:
        ins, outs = build_compute(g, node)
        stages = build_stages(outs)
    except Exception:  # noqa: BLE001  (a definition that cannot be built here is costed as one load)
        return 1, [1] * len(node.inputs)
    position = {id(t): k for k, t in enumerate(ins) if t is not None}
    size, uses = 0, [0] * len(node.inputs)
    for st in stages:
        for x in walk(st.body):
            size += 1
            if isinstance(x, Load) and id(x.tensor) in position:
                uses[position[id(x.tensor)]] += 1
    return size, uses


def _shape_of(shape: tuple) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def view_source(g: Graph, node: Node) -> str | None:
    """The input value that ``node`` merely reinterprets (same row-major bytes), or None.

    Decided from the compute definition: the output must be a single Load of one input whose
    row-major linear index equals the output's linear index at every point."""
    cdef = get_compute(node.op)
    outs = [o for o in node.outputs if o]
    if cdef is None or cdef.pattern != "injective" or len(outs) != 1:
        return None
    out_t = g.types[outs[0]]
    try:
        ins, tensors = build_compute(g, node)
    except Exception:  # a definition that cannot be built here is simply not a view
        return None
    if len(tensors) != 1 or tensors[0].body is None:
        return None
    t = tensors[0]
    body = t.body
    if not isinstance(body, Load) or not isinstance(body.tensor, Tensor):
        return None
    k = next((k for k, x in enumerate(ins) if x is body.tensor), None)
    if k is None:
        return None
    src = node.inputs[k]
    in_t = g.types[src]
    if in_t.dtype != out_t.dtype or int(in_t.numel) != int(out_t.numel):
        return None
    return src if _same_linear_index(t.axes, t.shape, body.indices, body.tensor.shape) else None


def _linear(idx: tuple[Expr, ...], shape: tuple[int, ...]) -> Expr:
    flat: Expr = Const(0)
    for e, d in zip(idx, shape, strict=True):
        flat = flat * d + e
    return flat


def _same_linear_index(axes: tuple[Var, ...], out_shape: tuple[int, ...], idx: tuple[Expr, ...],
                       in_shape: tuple[int, ...]) -> bool:
    ranges = {a.name: (0, max(d - 1, 0)) for a, d in zip(axes, out_shape, strict=True)}
    flat_in = simplify(_linear(idx, in_shape), ranges)
    flat_out = simplify(_linear(axes, out_shape), ranges)
    if flat_in == flat_out:
        return True
    lin_in, lin_out = _affine(flat_in), _affine(flat_out)
    if lin_in is not None and lin_out is not None:
        drop = {a.name for a, d in zip(axes, out_shape, strict=True) if d == 1}  # always 0
        return {k: c for k, c in lin_in.items() if c and k not in drop} == \
            {k: c for k, c in lin_out.items() if c and k not in drop}
    # floordiv/mod forms the simplifier does not canonicalize: check every point
    n = math.prod(out_shape)
    if n <= 1 << 22:
        env = {a.name: np.arange(d, dtype=np.int64).reshape([-1 if k == j else 1 for j in range(len(out_shape))])
               for k, (a, d) in enumerate(zip(axes, out_shape, strict=True))}
        try:
            got = _eval_index(flat_in, env)
        except _NotIndex:
            return False
        return bool(np.array_equal(np.broadcast_to(got, out_shape), np.arange(n, dtype=np.int64).reshape(out_shape)))
    strides = [math.prod(out_shape[k + 1:]) for k in range(len(out_shape))]
    chunk = 1 << 20
    for start in range(0, n, chunk):
        flat = np.arange(start, min(n, start + chunk), dtype=np.int64)
        env = {a.name: (flat // s) % d for a, s, d in zip(axes, strides, out_shape, strict=True)}
        try:
            got = _eval_index(flat_in, env)
        except _NotIndex:
            return False
        if not np.array_equal(np.broadcast_to(got, flat.shape), flat):
            return False
    return True


def _affine(e: Expr) -> dict[str, int] | None:
    """``e`` as {var: coefficient, "": constant} if it is an integer affine form, else None."""
    if isinstance(e, Const) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return {"": e.value}
    if isinstance(e, Var):
        return {e.name: 1}
    if isinstance(e, BinOp) and e.op in ("add", "sub"):
        a, b = _affine(e.a), _affine(e.b)
        if a is None or b is None:
            return None
        sign = 1 if e.op == "add" else -1
        out = dict(a)
        for k, c in b.items():
            out[k] = out.get(k, 0) + sign * c
        return out
    if isinstance(e, BinOp) and e.op == "mul":
        a, b = _affine(e.a), _affine(e.b)
        if a is None or b is None:
            return None
        if set(b) == {""}:
            a, b = b, a
        if set(a) != {""}:
            return None
        return {k: a[""] * c for k, c in b.items()}
    return None


class _NotIndex(Exception):
    pass


_INDEX_OPS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "floordiv": np.floor_divide, "mod": np.mod,
    "min": np.minimum, "max": np.maximum, "lt": np.less, "le": np.less_equal, "eq": np.equal,
    "ne": np.not_equal, "and": np.logical_and, "or": np.logical_or,
}


def _eval_index(e: Expr, env: dict[str, np.ndarray]) -> np.ndarray:
    if isinstance(e, Const) and isinstance(e.value, (int, bool)):
        return np.asarray(e.value, dtype=np.int64 if not isinstance(e.value, bool) else np.bool_)
    if isinstance(e, Var) and e.name in env:
        return env[e.name]
    if isinstance(e, BinOp) and e.op in _INDEX_OPS:
        return _INDEX_OPS[e.op](_eval_index(e.a, env), _eval_index(e.b, env))
    if isinstance(e, Select):
        return np.where(_eval_index(e.cond, env), _eval_index(e.a, env), _eval_index(e.b, env))
    if isinstance(e, Cast):
        return _eval_index(e.value, env)
    raise _NotIndex


# ---- the partitioner -----------------------------------------------------------------------------


class _Partitioner:
    """Greedy merging of node groups; phases give anchors, then reductions, then the rest first
    pick. Group-level successor/predecessor sets are kept up to date for the cycle check."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.nodes = _topo_nodes(g)
        n = len(self.nodes)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for o in node.outputs:
                if o:
                    self.producer[o] = i
        for i, node in enumerate(self.nodes):
            for v in node.inputs:
                if v and v in self.producer:
                    lst = self.consumers.setdefault(v, [])
                    if i not in lst:
                        lst.append(i)
        self.node_preds: list[list[int]] = [
            sorted({self.producer[v] for v in node.inputs if v and v in self.producer}) for node in self.nodes
        ]
        self.graph_outputs = set(g.outputs)
        self.external = set(g.inputs) | set(g.constants)
        self.pattern = [get_compute(node.op).pattern for node in self.nodes]  # type: ignore[union-attr]
        self.view = [False] * n
        self.cost = [expression_cost(g, node) if self.pattern[i] in ("elementwise", "injective")
                     else (1, [1] * len(node.inputs)) for i, node in enumerate(self.nodes)]
        for i, node in enumerate(self.nodes):
            if self.pattern[i] == "injective":
                src = view_source(g, node)
                out = next(o for o in node.outputs if o)
                if src is not None and src not in self.external and out not in self.graph_outputs:
                    self.view[i] = True
        # group state: group id = index of a member; role of a node relative to its group's
        # heavy node: "heavy", "pre" (feeds it: re-executed per use), "post" (once per element)
        self.gid = list(range(n))
        self.members: dict[int, list[int]] = {i: [i] for i in range(n)}
        self.heavy: dict[int, int | None] = {i: (i if self.pattern[i] in HEAVY else None) for i in range(n)}
        self.role: list[str | None] = ["heavy" if self.pattern[i] in HEAVY else None for i in range(n)]
        self.succ: dict[int, set[int]] = {i: set() for i in range(n)}
        self.pred: dict[int, set[int]] = {i: set() for i in range(n)}
        for v, cs in self.consumers.items():
            p = self.producer[v]
            for c in cs:
                self.succ[p].add(c)
                self.pred[c].add(p)
        self.reasons: dict[tuple[int, int], str] = {}

    # ---- driver --------------------------------------------------------------------------
    def run(self) -> list[FusionGroup]:
        order = range(len(self.nodes))
        for i in order:
            if self.pattern[i] == "anchor":
                self._absorb_producers(i)
                self._grow_epilogue(i)
        for i in order:
            if self.pattern[i] == "reduction":
                self._absorb_producers(i)
                self._grow_epilogue(i)
        for i in order:
            if self._is_light(i):
                for v in self.nodes[i].outputs:
                    if v:
                        self._extend(v)
        return self._groups()

    def _is_light(self, i: int) -> bool:
        return self.pattern[i] in ("elementwise", "injective") and not self.view[i]

    def _absorb_producers(self, c: int) -> None:
        """Fuse ``c``'s producers into its group, depth first (an explicit stack of input lists)."""
        stack = [(c, iter(self.nodes[c].inputs))]
        while stack:
            node, inputs = stack[-1]
            v = next(inputs, None)
            if v is None:
                stack.pop()
                continue
            p = self.producer.get(v) if v else None
            if p is None or self.gid[p] == self.gid[node]:
                continue
            if self._try(p, v, node) is None:
                stack.append((p, iter(self.nodes[p].inputs)))

    def _grow_epilogue(self, h: int) -> None:
        for out in self.nodes[h].outputs:
            tail: str | None = out or None
            while tail is not None:
                tail = self._extend(tail)

    def _extend(self, v: str) -> str | None:
        """Fuse ``v``'s consumers into its producer's group; the new tail value, or None."""
        p = self.producer[v]
        cs = self.consumers.get(v, [])
        if not cs:
            return None
        if len(cs) == 1:
            c = cs[0]
            if self._try(p, v, c) is not None:
                return None
            outs = [o for o in self.nodes[c].outputs if o]
            return outs[0] if len(outs) == 1 else None
        return self._try_diamond(p, v)

    # ---- legality --------------------------------------------------------------------------
    def _name(self, i: int) -> str:
        node = self.nodes[i]
        return f"{node.op} '{node.name or f'#{i}'}'"

    def _shape(self, v: str) -> tuple[int, ...]:
        return _shape_of(self.g.types[v].shape)

    def _edge_reason(self, p: int, v: str, c: int) -> str | None:
        """Why edge p -(v)-> c may not be fused given the current groups (cycles aside)."""
        pp, pc = self.pattern[p], self.pattern[c]
        if "opaque" in (pp, pc):
            return "opaque op"
        if self.view[p] or self.view[c]:
            return "view op (aliases its input buffer, no kernel)"
        if v in self.graph_outputs:
            return f"graph output ({v!r} must be stored)"
        n_cons = len(self.consumers.get(v, []))
        if n_cons > 1:
            return f"multiple consumers ({v!r} is read by {n_cons} nodes)"
        gp, gc = self.gid[p], self.gid[c]
        hp, hc = self.heavy[gp], self.heavy[gc]
        if hp is not None and hc is not None:
            kinds = sorted((self.pattern[hp], self.pattern[hc]))
            if kinds == ["anchor", "anchor"]:
                return f"two anchors ({self._name(hp)} and {self._name(hc)})"
            if kinds == ["reduction", "reduction"]:
                return f"two reductions ({self._name(hp)} and {self._name(hc)})"
            return f"anchor and reduction in one group ({self._name(hp)} and {self._name(hc)})"
        if hc is not None:
            # p's group joins c's heavy group as a producer: it may not feed the group twice
            # (that mixes roles) nor be needed elsewhere (it is inlined, not stored)
            other = self._escaping(gp) - {v}
            if other:
                return f"producer's group also outputs {sorted(other)[0]!r}"
        if hc is not None and self.role[c] in ("heavy", "pre"):
            # p's group would feed the heavy node's operand loads (re-executed per use)
            if self.pattern[hc] == "anchor":
                bad = [m for m in self.members[gp] if self.pattern[m] != "injective"]
                if bad:
                    return f"{self.pattern[bad[0]]} producer of an anchor (would be recomputed per output tile)"
            return None if self.role[c] == "heavy" else self._light_rule(v, c)
        if hc is not None:  # c is in hc's epilogue: p's group computes a side operand
            return self._epilogue_rule(v, c)
        if hp is not None:  # c would extend hp's epilogue
            if self.role[p] == "pre":
                return "producer of an anchor/reduction operand"
            if pc != "elementwise":
                return f"{pc} consumer of {'an anchor' if self.pattern[hp] == 'anchor' else 'a reduction'}"
            return self._epilogue_rule(v, c)
        return self._light_rule(v, c)

    def _epilogue_rule(self, v: str, c: int) -> str | None:
        """An elementwise op joining an epilogue must not broadcast ``v`` (same output shape)."""
        if self.pattern[c] != "elementwise":
            return f"{self.pattern[c]} op in an epilogue"
        if self._shape(v) != self._out_shape(c):
            return (f"shape differs ({v!r} is {list(self._shape(v))}, {self._name(c)} writes "
                    f"{list(self._out_shape(c) or ())})")
        return None

    def _light_rule(self, v: str, c: int) -> str | None:
        """Inlining ``v`` into ``c`` must not recompute it: no broadcast of ``v`` by an
        elementwise ``c``, no enlarging injective ``c`` (expand, tile)."""
        if self.pattern[c] == "elementwise":
            return self._epilogue_rule(v, c)
        if self.pattern[c] == "injective":
            ins = {x for x in self.nodes[c].inputs if x}
            reads = sum(int(self.g.types[x].numel) for x in ins)
            writes = sum(int(self.g.types[o].numel) for o in self.nodes[c].outputs if o)
            if writes > reads:
                return f"injective consumer enlarges its input ({reads} -> {writes} elements; would recompute)"
        return None

    def _escaping(self, g: int) -> set[str]:
        """Values produced in group ``g`` that are graph outputs or read outside it."""
        out = set()
        for m in self.members[g]:
            for o in self.nodes[m].outputs:
                if o and (o in self.graph_outputs or any(self.gid[c] != g for c in self.consumers.get(o, []))):
                    out.add(o)
        return out

    def _out_shape(self, c: int) -> tuple[int, ...] | None:
        outs = [o for o in self.nodes[c].outputs if o]
        return self._shape(outs[0]) if len(outs) == 1 else None

    def _too_deep(self, gids: set[int]) -> bool:
        """Whether the union of groups ``gids`` has a dataflow path longer than ``MAX_FUSED_DEPTH`` ops
        or an inlined expression larger than ``MAX_FUSED_SIZE`` nodes (estimated per op)."""
        members = sorted(m for g in gids for m in self.members[g])  # node order is topological
        inside = set(members)
        length: dict[int, int] = {}
        size: dict[int, int] = {}
        for m in members:
            n = 1 + max((length[q] for q in self.node_preds[m] if q in inside), default=0)
            if n > MAX_FUSED_DEPTH:
                return True
            length[m] = n
            if self.pattern[m] in HEAVY:  # stored or accumulated, never inlined into its consumers
                size[m] = 1
                continue
            own, uses = self.cost[m]
            s = own
            for v, k in zip(self.nodes[m].inputs, uses, strict=False):
                q = self.producer.get(v) if v else None
                if q is not None and q in inside:
                    s += k * (size[q] - 1)
            if s > MAX_FUSED_SIZE:
                return True
            size[m] = s
        return False

    def _creates_cycle(self, gids: set[int]) -> bool:
        """Whether merging ``gids`` makes a cycle: a path leaving them and coming back."""
        stack = [s for g in gids for s in self.succ[g] if s not in gids]
        seen = set(stack)
        while stack:
            x = stack.pop()
            for s in self.succ[x]:
                if s in gids:
                    return True
                if s not in seen:
                    seen.add(s)
                    stack.append(s)
        return False

    def _edge_creates_cycle(self, gp: int, gc: int) -> bool:
        """``_creates_cycle({gp, gc})`` for groups joined by an edge ``gp -> gc``: the group graph is
        acyclic, so a path back into the pair can only start at another successor of ``gp`` and end
        at ``gc`` (searching from ``gc``'s successors, the whole rest of a long chain, is not needed)."""
        stack = [s for s in self.succ[gp] if s != gc]
        seen = set(stack)
        while stack:
            x = stack.pop()
            for s in self.succ[x]:
                if s == gc:
                    return True
                if s not in seen and s != gp:
                    seen.add(s)
                    stack.append(s)
        return False

    def _try(self, p: int, v: str, c: int) -> str | None:
        """Fuse edge p -(v)-> c if legal; the reason it is not, else None."""
        if self.gid[p] == self.gid[c]:
            return None
        reason = self._edge_reason(p, v, c)
        if reason is None and self._too_deep({self.gid[p], self.gid[c]}):
            reason = f"fused chain would exceed {MAX_FUSED_DEPTH} ops (split to bound expression depth)"
        if reason is None and self._edge_creates_cycle(self.gid[p], self.gid[c]):
            reason = "would create a cycle between groups"
        if reason is not None:
            self.reasons[(p, c)] = reason
            return reason
        gp, gc = self.gid[p], self.gid[c]
        hp, hc = self.heavy[gp], self.heavy[gc]
        if hc is not None:
            new_role = "pre" if self.role[c] in ("heavy", "pre") else "post"
            for m in self.members[gp]:
                self.role[m] = new_role
        elif hp is not None:
            for m in self.members[gc]:
                self.role[m] = "post"
        self._merge({gp, gc})
        return None

    def _try_diamond(self, p: int, v: str) -> str | None:
        """Several consumers of ``v``: fuse them if they form a closed elementwise region of v's
        shape (all paths re-converge on one value); returns that value, else None."""
        gp = self.gid[p]
        if all(self.gid[c] == gp for c in self.consumers[v]):
            return None
        shape = self._shape(v)
        region: list[int] = []
        in_region = set(self.members[gp])
        produced = [v]
        fail = ""
        while True:
            escaping = [x for x in produced
                        if x in self.graph_outputs or any(c not in in_region for c in self.consumers.get(x, []))]
            if len(escaping) == 1 and escaping[0] != v:
                break
            if not escaping or len(region) >= MAX_DIAMOND:
                fail = f"no closed elementwise region within {MAX_DIAMOND} nodes"
                break
            x = min(escaping, key=lambda y: self.producer[y])
            if x in self.graph_outputs:
                fail = f"graph output {x!r} inside"
                break
            for c in self.consumers[x]:
                if c in in_region:
                    continue
                outs = [o for o in self.nodes[c].outputs if o]
                if (self.pattern[c] != "elementwise" or len(self.members[self.gid[c]]) != 1
                        or len(outs) != 1 or self._shape(outs[0]) != shape):
                    fail = f"{self._name(c)} cannot join"
                    break
                region.append(c)
                in_region.add(c)
                produced.append(outs[0])
            if fail:
                break
        gids = {gp} | {self.gid[c] for c in region}
        if not fail and self.heavy[gp] is not None and self.role[p] == "pre":
            fail = "producer of an anchor/reduction operand"
        if not fail and self._too_deep(gids):
            fail = f"fused chain would exceed {MAX_FUSED_DEPTH} ops"
        if not fail and self._creates_cycle(gids):
            fail = "would create a cycle between groups"
        if fail:
            n = len(self.consumers[v])
            for c in self.consumers[v]:
                if self.gid[c] != gp:
                    self.reasons[(p, c)] = f"multiple consumers ({v!r} is read by {n} nodes; {fail})"
            return None
        role = "post" if self.heavy[gp] is not None else None
        for c in region:
            self.role[c] = role
        self._merge(gids)
        return escaping[0]

    def _merge(self, gids: set[int]) -> None:
        keep = max(gids, key=lambda g: len(self.members[g]))
        for g in gids - {keep}:
            for m in self.members.pop(g):
                self.gid[m] = keep
                self.members[keep].append(m)
            h = self.heavy.pop(g)
            if h is not None:
                self.heavy[keep] = h
            for s in self.succ.pop(g):
                self.pred[s].discard(g)
                if s not in gids:
                    self.pred[s].add(keep)
                    self.succ[keep].add(s)
            for q in self.pred.pop(g):
                self.succ[q].discard(g)
                if q not in gids:
                    self.succ[q].add(keep)
                    self.pred[keep].add(q)
        self.succ[keep] -= gids
        self.pred[keep] -= gids

    # ---- results ---------------------------------------------------------------------------
    def _groups(self) -> list[FusionGroup]:
        # topological order of groups (Kahn), ties broken by earliest member
        first = {g: min(ms) for g, ms in self.members.items()}
        indeg = {g: len(self.pred[g]) for g in self.members}
        ready = [(first[g], g) for g, d in indeg.items() if d == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            _, g = heapq.heappop(ready)
            order.append(g)
            for s in self.succ[g]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    heapq.heappush(ready, (first[s], s))
        assert len(order) == len(self.members), "fusion produced a cyclic group graph"
        out = []
        for k, g in enumerate(order):
            ms = sorted(self.members[g])
            inside = set(ms)
            produced = {o for m in ms for o in self.nodes[m].outputs if o}
            inputs: list[str] = []
            for m in ms:
                for x in self.nodes[m].inputs:
                    if x and x not in produced and x not in inputs:
                        inputs.append(x)
            outputs = [o for m in ms for o in self.nodes[m].outputs
                       if o and (o in self.graph_outputs or any(c not in inside for c in self.consumers.get(o, [])))]
            h = self.heavy[g]
            anchor = None
            if h is not None:
                anchor = self.nodes[h]
            kind = "view" if len(ms) == 1 and self.view[ms[0]] else "kernel"
            pats = ["view" if self.view[m] else self.pattern[m] for m in ms]
            out.append(FusionGroup(k, [self.nodes[m] for m in ms], inputs, outputs, kind, anchor, pats))
        return out

    def explain_lines(self) -> list[str]:
        lines = []
        for i, node in enumerate(self.nodes):
            done: set[int] = set()
            for v in node.outputs:
                for c in self.consumers.get(v, []) if v else []:
                    if c in done or self.gid[c] == self.gid[i]:
                        continue
                    done.add(c)
                    reason = self.reasons.get((i, c)) or self._edge_reason(i, v, c)
                    if reason is None:
                        cyc = self._edge_creates_cycle(self.gid[i], self.gid[c])
                        reason = "would create a cycle between groups" if cyc else "not chosen by the greedy order"
                    lines.append(f"not fused: {self._name(i)} -> {self._name(c)}: {reason}")
        return lines


def _topo_nodes(g: Graph) -> list[Node]:
    """``g.nodes`` in a topological order: the given order when it already is one, else the
    order that always takes the earliest ready node (Kahn's algorithm, O(n log n))."""
    producer: dict[str, int] = {}
    for i, node in enumerate(g.nodes):
        for o in node.outputs:
            if o:
                producer.setdefault(o, i)
    available = set(g.inputs) | set(g.constants)
    waiting = [0] * len(g.nodes)
    users: dict[int, list[int]] = {}
    for i, node in enumerate(g.nodes):
        deps = {producer[x] for x in node.inputs if x and x not in available and x in producer}
        missing = [x for x in node.inputs if x and x not in available and x not in producer]
        if missing:
            raise CompileError(f"graph {g.name!r} has a cycle or an undefined value (node {node.name!r})")
        waiting[i] = len(deps)
        for d in deps:
            users.setdefault(d, []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(g.nodes[i])
        for u in users.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(g.nodes):
        stuck = next(n for i, n in enumerate(g.nodes) if waiting[i])
        raise CompileError(f"graph {g.name!r} has a cycle or an undefined value (node {stuck.name!r})")
    return order
