"""Readable text form of the graph IR."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph

_PLAIN = re.compile(r"^[A-Za-z0-9_.:/\-]+$")


def value_ref(name: str) -> str:
    """``%name``, quoted when the name has characters outside the plain set."""
    if not name:
        return "_"
    return f"%{name}" if _PLAIN.match(name) else f"%{name!r}"


def format_attr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return f"tensor<{DType.from_np(value.dtype)}{list(value.shape)}>({value.tolist()})"
        return f"tensor<{DType.from_np(value.dtype)}{list(value.shape)}>(...)"
    if isinstance(value, DType):
        return value.name
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def format_graph(g: Graph, max_nodes: int | None = None) -> str:
    ins = ", ".join(f"{value_ref(i)}: {g.types[i]}" for i in g.inputs)
    outs = ", ".join(f"{value_ref(o)}: {g.types.get(o, '?')}" for o in g.outputs)
    lines = [f"graph {g.name}({ins}) -> ({outs}) {{"]
    for name in g.constants:
        lines.append(f"  const {value_ref(name)}: {g.types[name]}")
    for k, n in enumerate(g.nodes):
        if max_nodes is not None and k >= max_nodes:
            lines.append(f"  ... {len(g.nodes) - k} more nodes")
            break
        outs_s = ", ".join(f"{value_ref(o)}: {g.types.get(o, '?')}" for o in n.outputs)
        args = ", ".join(value_ref(i) for i in n.inputs)
        attrs = ""
        if n.attrs:
            attrs = " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(n.attrs.items())) + "}"
        where = f"  # {n.name}" if n.name else ""
        lines.append(f"  {outs_s} = {n.op}({args}){attrs}{where}")
    lines.append("}")
    return "\n".join(lines)
