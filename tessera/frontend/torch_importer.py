"""PyTorch frontend: ``torch.export`` a module, decompose to core ATen, translate to Tessera.

Dynamic axes become symbolic dims named as the caller asks (``batch``, ``seq``). Symbolic
sizes that the program computes with (``sym_size``, views to symbolic shapes, ``arange`` up
to a symbolic length) are rebuilt as ``Shape``/``Concat`` subgraphs, so the imported graph is
valid for every size of the dynamic axes, not only the example's.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

from tessera.errors import (
    GraphError,
    InputCountError,
    ModelLoadError,
    TesseraError,
    UnsupportedOp,
    UnsupportedOperatorError,
)
from tessera.frontend.torch_builder import Builder, is_sym_node, to_numpy, torch_dtype
from tessera.frontend.torch_ops import CONVERTERS, target_key
from tessera.graph.ir import Graph, Node
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.tensor_type import TensorType
from tessera.graph.verify import verify

__all__ = ["import_torch", "supported_aten_ops"]


def supported_aten_ops() -> list[str]:
    """The ATen overloads (and Python operators on sizes) the frontend translates."""
    return sorted(CONVERTERS)


def import_torch(
    module: Any,
    example_inputs: tuple[Any, ...],
    *,
    input_names: Sequence[str] | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    output_names: Sequence[str] | None = None,
) -> Graph:
    """Import a ``torch.nn.Module`` into the graph IR via ``torch.export``.

    ``example_inputs`` are positional tensors for ``module.forward``; ``input_names`` name
    them (default: the forward parameters' names); ``dynamic_axes`` maps an input name to
    ``{axis: symbol}`` for axes that may vary (e.g. ``{"input_ids": {0: "batch", 1: "seq"}}``).
    Raises UnsupportedOperatorError listing every ATen op the frontend cannot translate."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"import_torch needs a torch.nn.Module, got {type(module).__name__}")
    example_inputs = tuple(example_inputs)
    names = _input_names(module, example_inputs, input_names)
    axes = _check_axes(dynamic_axes or {}, names, example_inputs)
    ep = _export(module, example_inputs, names, axes)
    source = f"torch.export of {type(module).__name__}"
    _scan_unsupported(ep, source)
    g = _translate(ep, names, axes, output_names, type(module).__name__)
    infer_shapes(g)
    verify(g)
    return g


# ---- argument checking ---------------------------------------------------------------------
def _input_names(module: Any, inputs: tuple[Any, ...], names: Sequence[str] | None) -> list[str]:
    import torch

    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        has_varargs = any(p.kind == p.VAR_POSITIONAL for p in
                          inspect.signature(module.forward).parameters.values())
        inspect.signature(module.forward).bind(*inputs)
    except TypeError as e:
        raise InputCountError(f"{type(module).__name__}.forward does not accept {len(inputs)} input(s): {e}") \
            from None
    except ValueError:  # no signature available (builtins): trust the caller
        params, has_varargs = [], True
    for i, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            raise InputCountError(f"example input {i} is a {type(x).__name__}; only tensors are supported")
    if names is not None:
        names = list(names)
        if len(names) != len(inputs):
            raise InputCountError(f"{len(names)} input name(s) {names} for {len(inputs)} example input(s)")
        if len(set(names)) != len(names):
            raise InputCountError(f"duplicate input names {names}")
        return names
    if has_varargs or len(params) < len(inputs):
        return [f"input_{i}" for i in range(len(inputs))]
    return [p.name for p in params[: len(inputs)]]


def _check_axes(axes: dict[str, dict[int, str]], names: list[str], inputs: tuple[Any, ...]) \
        -> dict[str, dict[int, str]]:
    unknown = sorted(set(axes) - set(names))
    if unknown:
        raise InputCountError(f"dynamic_axes names unknown input(s) {unknown}; inputs are {names}")
    out: dict[str, dict[int, str]] = {}
    for name, x in zip(names, inputs, strict=True):
        spec = axes.get(name) or {}
        norm: dict[int, str] = {}
        for axis, sym in spec.items():
            if not -x.dim() <= axis < x.dim():
                raise InputCountError(f"dynamic axis {axis} out of range for input {name!r} of rank {x.dim()}")
            if not str(sym).isidentifier():
                raise TesseraError(f"dynamic axis name {sym!r} must be an identifier")
            norm[axis % x.dim()] = str(sym)
        if norm:
            out[name] = norm
    return out


# ---- export ----------------------------------------------------------------------------------------
def _export(module: Any, inputs: tuple[Any, ...], names: list[str], axes: dict[str, dict[int, str]]) -> Any:
    """torch.export with Dim.AUTO on the dynamic axes, then core-ATen decompositions.

    Size-1 (and 0) example dims would be specialized by torch.export, so those example inputs
    are tiled to size 2 along their dynamic axes first; only shapes matter for tracing. An
    axis the model itself fixes to one size stays static (with a warning)."""
    import torch
    from torch.export import Dim

    axes = {k: dict(v) for k, v in axes.items()}
    for _attempt in range(2):
        ex: list[Any] = []
        shapes: list[Any] = []
        for name, x in zip(names, inputs, strict=True):
            spec = axes.get(name, {})
            for a in spec:
                if x.shape[a] == 1:
                    x = torch.cat([x, x], dim=a)
            ex.append(x)
            shapes.append({a: Dim.AUTO for a in spec} or None)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dyn = tuple(shapes) if any(shapes) else None
                ep = torch.export.export(module, tuple(ex), dynamic_shapes=dyn, strict=False)
        except Exception as e:  # torch raises many exception types for untraceable code
            raise ModelLoadError(f"torch.export of {type(module).__name__} failed: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}") from e
        fixed = _specialized_axes(ep, names, axes)
        if not fixed:
            break
        for name, a in fixed:
            warnings.warn(f"input {name!r} axis {a} ({axes[name][a]}) is fixed by the model; imported as static",
                          stacklevel=3)
            del axes[name][a]
    else:  # pragma: no cover - the second export has no specialized axes left
        raise ModelLoadError("torch.export kept specializing dynamic axes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = ep.run_decompositions()
    except Exception as e:  # as for export: torch raises many types for graphs it cannot re-trace
        raise ModelLoadError(f"decomposing the torch.export of {type(module).__name__} failed: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    ep._tessera_axes = axes  # the axes that really are dynamic
    return ep


def _user_placeholders(ep: Any) -> list[Any]:
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    by_name = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    return [by_name[u] for u in user]


def _specialized_axes(ep: Any, names: list[str], axes: dict[str, dict[int, str]]) -> list[tuple[str, int]]:
    import torch

    out = []
    for name, ph in zip(names, _user_placeholders(ep), strict=True):
        shape = ph.meta["val"].shape
        for a in axes.get(name, {}):
            if not isinstance(shape[a], torch.SymInt) or not shape[a].node.expr.is_Symbol:
                out.append((name, a))
    return out


def _scan_unsupported(ep: Any, source: str) -> None:
    missing: dict[str, list[str]] = {}
    for n in ep.graph.nodes:
        if n.op == "call_function":
            key = target_key(n.target)
            if key not in CONVERTERS:
                missing.setdefault(key, []).append(n.name)
        elif n.op in ("call_module", "call_method", "get_attr"):
            missing.setdefault(f"{n.op}:{n.target}", []).append(n.name)
    if missing:
        raise UnsupportedOperatorError(
            [UnsupportedOp(op_type=k, node_names=tuple(v), source=source) for k, v in missing.items()]
        )


# ---- translation -------------------------------------------------------------------------------------
def _translate(ep: Any, names: list[str], axes: dict[str, dict[int, str]],
               output_names: Sequence[str] | None, model_name: str) -> Graph:
    import torch

    axes = ep._tessera_axes
    g = Graph(name=model_name)
    g.metadata["source"] = "torch.export"
    placeholders = _user_placeholders(ep)
    sym_names: dict[Any, str] = {}
    for name, ph in zip(names, placeholders, strict=True):
        shape = ph.meta["val"].shape
        for a, sym in axes.get(name, {}).items():
            expr = shape[a].node.expr
            if expr.is_Symbol:
                sym_names.setdefault(expr, sym)
    b = Builder(g, sym_names)

    for name, ph in zip(names, placeholders, strict=True):
        val = ph.meta["val"]
        dims = b.meta_dims(val)
        if any(d is None for d in dims):
            raise GraphError(f"input {name!r} has a shape Tessera cannot express: {tuple(val.shape)}")
        g.add_input(name, TensorType(torch_dtype(val.dtype), tuple(dims)))  # type: ignore[arg-type]
        b.env[ph.name] = name

    lifted = {s.arg.name: s for s in ep.graph_signature.input_specs if s.kind.name != "USER_INPUT"}
    for n in ep.graph.nodes:
        if n.op != "placeholder" or n.name not in lifted:
            continue
        spec = lifted[n.name]
        if spec.kind.name not in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            raise GraphError(f"unsupported exported input kind {spec.kind.name} ({n.name})")
        t = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
        if not isinstance(t, torch.Tensor):
            raise GraphError(f"lifted constant {spec.target!r} is not a tensor")
        cname = spec.target if spec.target not in g.types else g.fresh_name(spec.target)
        g.add_constant(cname, to_numpy(t))
        b.env[n.name] = cname

    for n in ep.graph.nodes:
        if n.op != "call_function":
            continue
        val = n.meta.get("val")
        if is_sym_node(n) and not isinstance(val, torch.SymInt) and isinstance(val, int):
            b.env[n.name] = b.i64([int(val)])  # a size torch.export resolved to a constant
            continue
        try:
            b.begin(n.name)
            b.env[n.name] = b.finish(CONVERTERS[target_key(n.target)](b, n))
        except TesseraError as e:
            if str(e).startswith("while translating"):
                raise
            raise GraphError(f"while translating FX node {n.name!r} ({target_key(n.target)}): {e}") from e
        _check_meta(b, n)

    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    _check_mutations(ep, names)
    user_outs = [s.arg.name for s in ep.graph_signature.output_specs if s.kind.name == "USER_OUTPUT"]
    by_name = {a.name: a for a in out_node.args[0] if hasattr(a, "name")}
    values = [b.tensor(by_name[u]) for u in user_outs]
    if output_names is not None and len(output_names) != len(values):
        raise InputCountError(f"{len(output_names)} output name(s) for {len(values)} output(s)")
    final = list(output_names) if output_names is not None else (
        ["output"] if len(values) == 1 else [f"output_{i}" for i in range(len(values))])
    _bind_outputs(g, values, final)
    _prune(g)
    return g


def _check_mutations(ep: Any, names: list[str]) -> None:
    """A compiled graph cannot write into its caller's tensors: an in-place update of an input is an
    error (dropping it would silently change results); one of a buffer is imported as the buffer's
    value at export time, with a warning."""
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    for spec in ep.graph_signature.output_specs:
        if spec.kind.name == "USER_INPUT_MUTATION":
            which = names[user.index(spec.target)] if spec.target in user else spec.target
            raise GraphError(f"the model writes into its input {which!r} in place; Tessera cannot import that")
        if spec.kind.name == "BUFFER_MUTATION":
            warnings.warn(f"the model updates buffer {spec.target!r} in place; the imported graph keeps its "
                          "value at export time and does not update it", stacklevel=4)


def _check_meta(b: Builder, n: Any) -> None:
    """The translated value must have the FX node's dtype, rank and static dims."""
    import torch

    val = n.meta.get("val")
    res = b.env.get(n.name)
    pairs = list(zip(val, res, strict=False)) if isinstance(val, (list, tuple)) and isinstance(res, list) \
        else [(val, res)]
    for v, r in pairs:
        if not isinstance(v, torch.Tensor) or not isinstance(r, str):
            continue
        t = b.g.types[r]
        dims = b.meta_dims(v)
        ok = t.dtype == torch_dtype(v.dtype) and t.rank == len(dims) and all(
            not (isinstance(d, int) and isinstance(e, int)) or d == e for d, e in zip(dims, t.shape, strict=False))
        if not ok:
            raise GraphError(
                f"FX node {n.name!r} ({target_key(n.target)}): translated to {t}, but PyTorch gives "
                f"{torch_dtype(v.dtype)}[{','.join(str(d) for d in dims)}]"
            )


def _bind_outputs(g: Graph, values: list[str], final: list[str]) -> None:
    """Make the graph's outputs carry the final names (renaming, or Identity where needed)."""
    for name in final:  # an intermediate value that happens to carry an output's name moves aside
        if name in g.types and name not in values:
            _rename(g, name, g.fresh_name(f"{name}_"))
    renamed: dict[str, str] = {}
    for v, name in zip(values, final, strict=True):
        src = renamed.get(v, v)
        if src == name:
            pass
        elif v not in renamed and v not in g.inputs and v not in g.constants and v not in final:
            _rename(g, v, name)
            renamed[v] = name
        else:
            g.nodes.append(Node("Identity", [src], [name], name=name))
            g.types[name] = g.types[src]
        g.outputs.append(name)


def _rename(g: Graph, old: str, new: str) -> None:
    if old in g.constants:
        g.constants[new] = g.constants.pop(old)
    g.inputs = [new if i == old else i for i in g.inputs]
    for node in g.nodes:
        node.inputs = [new if i == old else i for i in node.inputs]
        if old in node.outputs:
            node.outputs = [new if o == old else o for o in node.outputs]
            if node.name == old:
                node.name = new
    g.types[new] = g.types.pop(old)


def _prune(g: Graph) -> None:
    """Drop nodes whose results are never used, unused constants and reserved names."""
    live = set(g.outputs)
    kept: list[Node] = []
    for node in reversed(g.nodes):
        if any(o in live for o in node.outputs if o):
            kept.append(node)
            live.update(i for i in node.inputs if i)
    g.nodes = kept[::-1]
    for c in [c for c in g.constants if c not in live]:
        del g.constants[c]
    defined = set(g.inputs) | set(g.constants) | {o for n in g.nodes for o in n.outputs if o}
    g.types = {k: v for k, v in g.types.items() if k in defined and v is not None}
