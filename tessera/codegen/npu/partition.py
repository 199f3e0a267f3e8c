"""Partition a graph between the NPU and the host CPU.

The accelerator runs matrix products: Conv (group 1, 2-D; a preceding zero Pad is folded into
the window), Gemm (no transposed A, alpha = beta = 1), MatMul with a constant 2-D weight or with
two runtime operands of equal batch dims (attention). Each such *anchor* absorbs the epilogue
its machine's store path can apply (``dma.store_ops``): a per-channel bias Add, Relu, Clip as
relu6/clip. Which of these are possible is read from the :class:`Machine`, never from a name.
Everything else runs on the host, in graph order, with its DRAM traffic accounted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera.codegen.npu.machine import Machine
from tessera.codegen.npu.vector import vector_dtype
from tessera.graph.ir import Graph, Node
from tessera.graph.ops.nn import Window, make_window
from tessera.graph.registry import get_op, normalize_attrs


@dataclass
class DeviceLayer:
    """One matrix product (+ fused epilogue) run on the NPU.

    ``kind``: conv | linear (constant weight) | batched (two runtime operands).
    ``m, k, n, batch`` are the GEMM's dims; ``weight`` is the ``[K, N]`` float weight of conv/linear
    layers (``weight_name`` the constant it came from, ``weight_axis`` its output-channel axis)."""

    tag: str
    kind: str
    nodes: list[Node]
    a: str
    b: str
    out: str
    m: int
    k: int
    n: int
    batch: int = 1
    weight: np.ndarray | None = None
    weight_name: str = ""
    bias: np.ndarray | None = None
    act: str = "none"
    window: Window | None = None
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    conv_pads: tuple[int, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.k * self.n


@dataclass
class VectorLayer:
    """An elementwise ``act(a + b)`` of two runtime tensors of one shape, run on the vector unit."""

    tag: str
    nodes: list[Node]
    a: str
    b: str
    out: str
    shape: tuple[int, ...]
    dtype: str
    act: str = "none"

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class HostStep:
    """A node the host CPU runs."""

    node: Node


def _tag(name: str, used: set[str]) -> str:
    base = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "layer"
    base = base[:48]
    tag, k = base, 1
    while tag in used:
        k += 1
        tag = f"{base}_{k}"
    used.add(tag)
    return tag


def _static(g: Graph, v: str) -> tuple[int, ...]:
    return tuple(int(d) for d in g.types[v].shape)


def _const_scalar(g: Graph, v: str) -> float | None:
    if v and v in g.constants and g.constants[v].size == 1:
        return float(g.constants[v].reshape(()))
    return None


def _epilogue_act(g: Graph, node: Node, m: Machine) -> str | None:
    """The store-path activation a Relu/Clip node maps to on ``m``, or None."""
    if node.op == "Relu" and "relu" in m.store_ops:
        return "relu"
    if node.op == "Clip":
        lo = _const_scalar(g, node.inputs[1]) if len(node.inputs) > 1 else None
        hi = _const_scalar(g, node.inputs[2]) if len(node.inputs) > 2 else None
        if lo is None or hi is None:
            return None
        if lo == 0.0 and hi == 6.0 and "relu6" in m.store_ops:
            return "relu6"
        if "clip" in m.store_ops:
            return f"clip({lo:g},{hi:g})"
    return None


def _bias_vector(g: Graph, node: Node, out: str, n: int, channel_axis: int) -> np.ndarray | None:
    """The per-channel vector of an Add(out, const) whose constant only varies along ``channel_axis``."""
    if node.op != "Add" or len(node.inputs) != 2:
        return None
    other = node.inputs[1] if node.inputs[0] == out else node.inputs[0]
    if other not in g.constants or other == out:
        return None
    c = np.asarray(g.constants[other])
    rank = len(g.types[out].shape)
    if c.ndim > rank or c.dtype.kind != "f":
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    axis = channel_axis % rank
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, n):
        return None
    return np.broadcast_to(c.reshape(-1), (n,)).astype(np.float32)


def _anchor(g: Graph, node: Node, m: Machine, folded_pad: dict[str, tuple[str, tuple[int, ...]]]) -> DeviceLayer | None:
    attrs = normalize_attrs(get_op(node.op), node)
    if any(not g.types[v].is_static for v in node.inputs + node.outputs if v):
        return None
    if any(g.types[v].dtype.value != "f32" for v in node.inputs + node.outputs if v):
        return None
    if node.op == "Conv":
        x, w = node.inputs[0], node.inputs[1]
        if w not in g.constants or attrs["group"] != 1 or len(_static(g, x)) != 4:
            return None
        wt = g.constants[w]
        win = make_window(attrs, wt.shape[2:])
        if win.auto_pad not in ("NOTSET", "") or any(int(d) != 1 for d in win.dilations):
            return None
        pads = tuple(int(p) for p in win.pads)
        in_shape = _static(g, x)
        if x in folded_pad:
            src, extra = folded_pad[x]
            pads = tuple(a + b for a, b in zip(pads, extra, strict=True))
            x, in_shape = src, _static(g, src)
        out_shape = _static(g, node.outputs[0])
        nb, co, oh, ow = out_shape
        bias = g.constants[node.inputs[2]].astype(np.float32) if len(node.inputs) > 2 and node.inputs[2] else None
        if len(node.inputs) > 2 and node.inputs[2] and node.inputs[2] not in g.constants:
            return None
        wmat = wt.reshape(co, -1).T.astype(np.float32)
        return DeviceLayer("", "conv", [node], x, w, node.outputs[0], nb * oh * ow, wmat.shape[0], co,
                           weight=wmat, weight_name=w, bias=bias, window=win, in_shape=in_shape,
                           out_shape=out_shape, conv_pads=pads)
    if node.op == "Gemm":
        a, b = node.inputs[0], node.inputs[1]
        if b not in g.constants or attrs["transA"] or attrs["alpha"] != 1.0 or attrs["beta"] != 1.0:
            return None
        wt = g.constants[b].astype(np.float32)
        wmat = wt.T if attrs["transB"] else wt
        mm, kk = _static(g, a)
        nn = wmat.shape[1]
        bias = None
        if len(node.inputs) > 2 and node.inputs[2]:
            c = node.inputs[2]
            if c not in g.constants or g.constants[c].size not in (1, nn) or g.constants[c].ndim > 2 or (
                    g.constants[c].ndim == 2 and g.constants[c].shape[0] != 1):
                return None
            bias = np.broadcast_to(g.constants[c].reshape(-1), (nn,)).astype(np.float32)
        return DeviceLayer("", "linear", [node], a, b, node.outputs[0], mm, kk, nn, weight=np.ascontiguousarray(wmat),
                           weight_name=b, bias=bias, in_shape=(mm, kk), out_shape=(mm, nn),
                           attrs={"weight_axis": 0 if attrs["transB"] else 1})
    if node.op == "MatMul":
        a, b = node.inputs
        sa, sb, so = _static(g, a), _static(g, b), _static(g, node.outputs[0])
        if len(sa) < 2:
            return None
        if b in g.constants and len(sb) == 2:
            mm = int(np.prod(sa[:-1]))
            return DeviceLayer("", "linear", [node], a, b, node.outputs[0], mm, sa[-1], sb[1],
                               weight=g.constants[b].astype(np.float32), weight_name=b, in_shape=sa, out_shape=so,
                               attrs={"weight_axis": 1})
        if b not in g.constants and a not in g.constants and len(sb) == len(sa) and sa[:-2] == sb[:-2]:
            batch = int(np.prod(sa[:-2])) if len(sa) > 2 else 1
            return DeviceLayer("", "batched", [node], a, b, node.outputs[0], sa[-2], sa[-1], sb[-1], batch=batch,
                               in_shape=sa, out_shape=so)
    return None


def _zero_spatial_pads(g: Graph, node: Node) -> tuple[int, ...] | None:
    """Conv-style pads (begins, ends on H, W) of a zero constant Pad of an NCHW tensor, else None."""
    if node.op != "Pad" or len(node.inputs) < 2 or node.inputs[1] not in g.constants:
        return None
    attrs = normalize_attrs(get_op(node.op), node)
    if attrs.get("mode", "constant") != "constant":
        return None
    if len(node.inputs) > 2 and node.inputs[2]:
        v = _const_scalar(g, node.inputs[2])
        if v is None or v != 0.0:
            return None
    if len(node.inputs) > 3 and node.inputs[3]:
        return None
    p = [int(x) for x in g.constants[node.inputs[1]].reshape(-1)]
    if len(p) != 8 or any(x < 0 for x in p) or p[0] or p[1] or p[4] or p[5]:
        return None
    return (p[2], p[3], p[6], p[7])


def _vector_add(g: Graph, node: Node, m: Machine) -> VectorLayer | None:
    dt = vector_dtype(m)
    if dt is None or node.op != "Add" or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a in g.constants or b in g.constants or a == b:
        return None
    ta, tb, to = g.types[a], g.types[b], g.types[node.outputs[0]]
    if not (ta.is_static and ta == tb == to and ta.dtype.value == "f32"):
        return None
    return VectorLayer("", [node], a, b, node.outputs[0], _static(g, a), dt)


def partition(g: Graph, m: Machine) -> list[DeviceLayer | VectorLayer | HostStep]:
    """The graph's nodes in order, as device layers (matrix products + fused epilogue; elementwise adds
    on a vector unit) and host steps."""
    consumers = g.consumers()
    outputs = set(g.outputs)

    def sole_consumer(v: str) -> Node | None:
        cs = consumers.get(v, [])
        return cs[0] if len(cs) == 1 and v not in outputs else None

    pads: dict[str, tuple[str, tuple[int, ...]]] = {}
    for node in g.nodes:
        pp = _zero_spatial_pads(g, node)
        c = sole_consumer(node.outputs[0]) if pp is not None else None
        if pp is not None and c is not None and c.op == "Conv" and c.inputs[0] == node.outputs[0]:
            pads[node.outputs[0]] = (node.inputs[0], pp)

    steps: list[DeviceLayer | VectorLayer | HostStep] = []
    absorbed: set[int] = set()
    used: set[str] = set()
    for node in g.nodes:
        if id(node) in absorbed:
            continue
        if node.op == "Pad" and node.outputs[0] in pads:
            continue  # folded into its Conv
        vl = _vector_add(g, node, m)
        if vl is not None:
            vl.tag = _tag(node.name or node.outputs[0], used)
            nxt = sole_consumer(vl.out)
            if nxt is not None and nxt.op == "Relu" and ("relu" in m.store_ops or m.has_vector("relu", vl.dtype)):
                vl.act, vl.out = "relu", nxt.outputs[0]
                vl.nodes.append(nxt)
                absorbed.add(id(nxt))
            steps.append(vl)
            continue
        layer = _anchor(g, node, m, pads) if node.op in ("Conv", "Gemm", "MatMul") else None
        if layer is None:
            if node.op == "Conv" and node.inputs[0] in pads:  # not offloaded after all: keep the Pad
                pads.pop(node.inputs[0])
                steps.append(HostStep(g.producers()[node.inputs[0]]))
            steps.append(HostStep(node))
            continue
        layer.tag = _tag(node.name or node.outputs[0], used)
        channel_axis = 1 if layer.kind == "conv" else -1
        while True:  # fuse the epilogue chain
            nxt = sole_consumer(layer.out)
            if nxt is None:
                break
            if layer.act == "none" and layer.kind != "batched":
                vec = _bias_vector(g, nxt, layer.out, layer.n, channel_axis)
                if vec is not None:
                    layer.bias = vec if layer.bias is None else layer.bias + vec
                    layer.nodes.append(nxt)
                    absorbed.add(id(nxt))
                    layer.out = nxt.outputs[0]
                    continue
            act = _epilogue_act(g, nxt, m) if layer.act == "none" else None
            if act is not None and nxt.inputs[0] == layer.out:
                layer.act = act
                layer.nodes.append(nxt)
                absorbed.add(id(nxt))
                layer.out = nxt.outputs[0]
                continue
            break
        steps.append(layer)
    return steps
