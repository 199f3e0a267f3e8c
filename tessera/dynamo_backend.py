"""``torch.compile(model, backend="tessera")``: compile TorchDynamo graphs with Tessera for the CPU.

Registered through the ``torch_dynamo_backends`` entry point. Each FX graph Dynamo hands over is
imported with the torch frontend (``torch.export``), compiled for static shapes with
:func:`tessera.compile`, and run through the compiled library on NumPy views of the inputs.
A compiled model is kept per input signature (shapes, dtypes and the values of integer
arguments), so graphs Dynamo marks dynamic are re-specialized per concrete shape.

A graph Tessera cannot import or compile (unsupported operators, unsupported constructs)
falls back to eager PyTorch with one warning naming the reason. The backend is for inference:
outputs do not carry autograd history.

Options (``torch.compile(..., options={...})``): ``target`` (default ``"host"``),
``num_threads``, and ``freeze`` (bake ``nn.Parameter`` inputs into the compiled model as
constants, which lets the compiler pre-pack weights; the cache then keys on the parameter
tensors' identity and version, so in-place updates trigger a recompile).
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from tessera.errors import TesseraError

__all__ = ["tessera_backend"]

_OPTIONS = ("target", "num_threads", "freeze")
# Methods/functions that only re-view their first argument: an in-place op through them mutates the input.
_VIEW_OPS = {"view", "reshape", "transpose", "permute", "narrow", "select", "squeeze", "unsqueeze", "expand",
             "t", "flatten", "unflatten", "as_strided", "view_as", "expand_as", "__getitem__", "getitem",
             "split", "chunk", "unbind", "contiguous", "detach"}
_INPLACE_OPERATORS = {operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv,
                      operator.ifloordiv, operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor}


_NUMPY_DTYPE_NAMES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")


class _Unsupported(TesseraError):
    """A graph property this backend does not handle (reported through the eager fallback)."""


def _target_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _mutates_input(gm: Any) -> str | None:
    """Name of a node that writes into a graph input (torch.export would functionalize it away)."""
    def base_placeholder(node: Any) -> bool:
        while node is not None and hasattr(node, "op"):
            if node.op == "placeholder":
                return True
            if node.op not in ("call_method", "call_function") or _target_name(node.target) not in _VIEW_OPS:
                return False
            node = node.args[0] if node.args else None
        return False

    for n in gm.graph.nodes:
        if n.op not in ("call_method", "call_function") or not n.args:
            continue
        name = _target_name(n.target)
        inplace = (n.target in _INPLACE_OPERATORS or n.kwargs.get("inplace") is True or n.kwargs.get("out") is not None
                   or (name.endswith("_") and not name.startswith("_")))
        if inplace and base_placeholder(n.args[0]):
            return f"{n.name} ({name})"
    return None


def _output_plan(gm: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """The output pytree spec and, per leaf, where its value comes from:
    ``("out", k)`` compiled output k, ``("arg", i)`` call argument i, ``("const", v)`` a constant."""
    import torch
    from torch.utils._pytree import tree_flatten

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    leaves, spec = tree_flatten(out_node.args[0])
    plan: list[tuple[str, Any]] = []
    k = 0
    for leaf in leaves:
        if not isinstance(leaf, torch.fx.Node):
            plan.append(("const", leaf))
            continue
        val = leaf.meta.get("example_value", leaf.meta.get("val"))
        if isinstance(val, torch.Tensor):
            plan.append(("out", k))
            k += 1
        elif leaf.op == "placeholder":
            plan.append(("arg", placeholders.index(leaf)))
        else:
            raise _Unsupported(f"graph returns a non-tensor value computed in the graph ({leaf.name})")
    return spec, plan


def _wrapper(gm: Any, args: Sequence[Any], plan: list[tuple[str, Any]], freeze: bool) -> tuple[Any, list[Any]]:
    """A module taking only the tensor arguments Tessera receives (ints and, when freezing,
    parameters are bound in) and returning the flat tuple of tensor outputs; plus its inputs."""
    import torch
    from torch.utils._pytree import tree_flatten

    kinds: list[tuple[str, Any]] = []
    inputs: list[Any] = []
    frozen: dict[int, Any] = {}
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            if freeze and isinstance(a, torch.nn.Parameter):
                frozen[i] = a.detach()
                kinds.append(("buf", f"frozen_{i}"))
            else:
                kinds.append(("in", len(inputs)))
                inputs.append(a)
        else:
            kinds.append(("const", a))
    out_positions = [j for j, (kind, _) in enumerate(plan) if kind == "out"]

    class DynamoGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gm = gm
            for i, t in frozen.items():
                self.register_buffer(f"frozen_{i}", t)

        def forward(self, *xs: Any) -> tuple[Any, ...]:
            full = [xs[v] if kind == "in" else getattr(self, v) if kind == "buf" else v for kind, v in kinds]
            leaves, _ = tree_flatten(self.gm(*full))
            return tuple(leaves[j] for j in out_positions)

    return DynamoGraph(), inputs


def _signature(args: Sequence[Any], freeze: bool) -> tuple[Any, ...]:
    import torch

    key: list[Any] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            item: tuple[Any, ...] = (tuple(a.shape), str(a.dtype), a.device.type)
            if freeze and isinstance(a, torch.nn.Parameter):
                item += (id(a), a._version)
            key.append(item)
        else:
            key.append(("value", type(a).__name__, a))
    return tuple(key)


def _to_numpy(t: Any) -> Any:
    return t.detach().cpu().contiguous().numpy()


def tessera_backend(
    gm: Any, example_inputs: Sequence[Any], options: dict[str, Any] | None = None
) -> Callable[..., Any]:
    """TorchDynamo backend: return a callable running ``gm`` through Tessera-compiled code, or
    ``gm.forward`` (with one warning) when the graph cannot be compiled."""
    import torch
    from torch.utils._pytree import tree_unflatten

    import tessera

    numpy_dtypes = {getattr(torch, n) for n in _NUMPY_DTYPE_NAMES}
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown tessera backend option(s) {unknown}; known: {', '.join(_OPTIONS)}")
    target = opts.get("target", "host")
    num_threads = opts.get("num_threads")
    freeze = bool(opts.get("freeze", False))
    cache: dict[tuple[Any, ...], Any] = {}
    state = {"eager": False}

    def fall_back(reason: object) -> Callable[..., Any]:
        state["eager"] = True
        warnings.warn(f"tessera: falling back to eager for this graph: {reason}", stacklevel=3)
        return gm.forward

    def compile_for(args: Sequence[Any]) -> Any:
        for a in args:
            if isinstance(a, torch.Tensor) and a.dtype not in numpy_dtypes:
                raise _Unsupported(f"inputs of dtype {a.dtype} have no NumPy equivalent")
        wrapper, inputs = _wrapper(gm, args, plan, freeze)
        return tessera.compile(_import(wrapper, inputs), target=target, num_threads=num_threads)

    try:
        if (where := _mutates_input(gm)) is not None:
            raise _Unsupported(f"the graph writes into an input in place: {where}")
        spec, plan = _output_plan(gm)
        bad = [t.device.type for t in example_inputs if isinstance(t, torch.Tensor) and t.device.type != "cpu"]
        if bad:
            raise _Unsupported(f"tessera compiles for the CPU; inputs are on {bad[0]}")
        if all(isinstance(a, torch.Tensor | int | float | bool) and not isinstance(a, torch.SymInt)
               for a in example_inputs):
            cache[_signature(example_inputs, freeze)] = compile_for(example_inputs)
        # else: symbolic sizes (dynamic=True): compile on the first call, when they are concrete
    except TesseraError as e:
        return fall_back(e)

    def run(*args: Any) -> Any:
        if state["eager"]:
            return gm.forward(*args)
        key = _signature(args, freeze)
        cm = cache.get(key)
        if cm is None:
            try:
                cm = cache[key] = compile_for(args)
            except TesseraError as e:
                return fall_back(e)(*args)
        arrays = [_to_numpy(a) for a in args if isinstance(a, torch.Tensor)
                  and not (freeze and isinstance(a, torch.nn.Parameter))]
        outs = cm(*arrays)
        leaves = [torch.from_numpy(outs[v]) if kind == "out" else args[v] if kind == "arg" else v
                  for kind, v in plan]
        return tree_unflatten(leaves, spec)

    run.tessera_cache = cache  # type: ignore[attr-defined]  (for tests and debugging)
    return run


def _import(module: Any, inputs: list[Any]) -> Any:
    from tessera.frontend.torch_importer import import_torch

    return import_torch(module, tuple(inputs), input_names=[f"input_{i}" for i in range(len(inputs))])
