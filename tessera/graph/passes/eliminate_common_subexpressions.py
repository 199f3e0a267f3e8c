"""Common subexpression elimination for nodes and constants."""

from __future__ import annotations

import hashlib
from typing import Any

from tessera.graph.ir import Graph
from tessera.graph.passes._rewrite import NONDETERMINISTIC, attr_key


def eliminate_common_subexpressions(g: Graph) -> Graph:
    """Merge identical constants (same dtype, shape and bytes) and identical nodes (same op,
    attributes and inputs) into one. Values that are graph outputs are never merged away."""
    out = g.copy()
    alias: dict[str, str] = _constant_aliases(out)
    for name in alias:
        del out.constants[name]
        del out.types[name]

    seen: dict[Any, list[str]] = {}
    kept = []
    for node in out.nodes:
        node.inputs = [alias.get(i, i) for i in node.inputs]
        if node.op in NONDETERMINISTIC:
            kept.append(node)
            continue
        key = (
            node.op,
            tuple(node.inputs),
            tuple(sorted((k, attr_key(v)) for k, v in node.attrs.items())),
            tuple(bool(o) for o in node.outputs),
        )
        rep = seen.get(key)
        if rep is None or any(o in g.outputs for o in node.outputs):
            seen.setdefault(key, node.outputs)
            kept.append(node)
            continue
        for o, r in zip(node.outputs, rep, strict=True):
            if o:
                alias[o] = r
                del out.types[o]
    out.nodes = kept
    return out


def _constant_aliases(g: Graph) -> dict[str, str]:
    """Duplicate constant name -> the first constant with identical contents."""
    groups: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for name, arr in g.constants.items():
        groups.setdefault((arr.dtype.str, arr.shape), []).append(name)
    alias: dict[str, str] = {}
    for names in groups.values():
        if len(names) < 2:
            continue
        by_hash: dict[bytes, list[str]] = {}
        for name in names:
            data = g.constants[name].tobytes()
            reps = by_hash.setdefault(hashlib.blake2b(data, digest_size=16).digest(), [])
            rep = next((r for r in reps if g.constants[r].tobytes() == data), None)
            if rep is None or name in g.outputs:
                reps.append(name)
            else:
                alias[name] = rep
    return alias
