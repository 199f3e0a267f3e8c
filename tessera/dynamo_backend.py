"""``torch.compile(model, backend="tessera")``: compile TorchDynamo graphs with Tessera for the CPU.

Registered through the ``torch_dynamo_backends`` entry point. Each FX graph Dynamo hands over is
imported with the torch frontend (``torch.export``), compiled for static shapes with
:func:`tessera.compile`, and run through the compiled library on NumPy views of the inputs.
A compiled model is kept per input signature (shapes, dtypes and the values of non-tensor
arguments), so graphs Dynamo marks dynamic are re-specialized per concrete shape (at most
``MAX_SIGNATURES`` per graph).

Training: a graph that runs with grad enabled on inputs or parameters requiring grad goes
through AOTAutograd, and Tessera compiles its forward and its backward graph the same way, so
outputs carry autograd history and gradients are Tessera-computed.

The backend never fails a ``torch.compile``d call for its own reasons: any failure inside it
(import, ``torch.export``, decomposition, compile, or the first run of the compiled code) runs
that graph eagerly from then on, with one :class:`FallbackWarning` per distinct reason per process.
An exception the model itself raises surfaces unchanged. Only bad options are errors.

Options (``torch.compile(..., options={...})``): ``target`` (default ``"host"``),
``num_threads`` (a positive int), and ``freeze`` (inference graphs only: bake ``nn.Parameter``
inputs into the compiled model as constants, which lets the compiler pre-pack weights; the cache
then keys on the parameter tensors' identity and version, so in-place updates trigger a recompile).
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tessera.errors import TesseraError, UnsupportedOperatorError

__all__ = ["BackendOptionError", "FallbackWarning", "MAX_SIGNATURES", "reset_fallback_warnings", "tessera_backend"]

_OPTIONS = ("target", "num_threads", "freeze")
MAX_SIGNATURES = 16
# Methods/functions that only re-view their first argument: an in-place op through them mutates the input.
_VIEW_OPS = {"view", "reshape", "transpose", "permute", "narrow", "select", "squeeze", "unsqueeze", "expand",
             "t", "flatten", "unflatten", "as_strided", "view_as", "expand_as", "__getitem__", "getitem",
             "split", "chunk", "unbind", "contiguous", "detach"}
_INPLACE_OPERATORS = {operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv,
                      operator.ifloordiv, operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor}


_NUMPY_DTYPE_NAMES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")


class BackendOptionError(TesseraError):
    """``torch.compile(..., backend="tessera", options=...)`` got an unknown key or a bad value."""


class FallbackWarning(UserWarning):
    """A graph runs eagerly because Tessera could not compile or run it (the message says why)."""


class _Unsupported(TesseraError):
    """A graph property this backend does not handle (reported through the eager fallback)."""


_warned: set[str] = set()


def reset_fallback_warnings() -> None:
    """Forget which fallback reasons were already reported (each is warned once per process)."""
    _warned.clear()


def _reason(e: BaseException) -> str:
    """One line naming why a graph falls back; equal for equal causes (node names left out)."""
    if isinstance(e, UnsupportedOperatorError):
        return "unsupported operator(s): " + ", ".join(sorted(op.op_type for op in e.ops))
    try:
        lines = str(e).strip().splitlines()
    except Exception:  # an exception whose message cannot be rendered still names its type
        lines = []
    text = lines[0] if lines else ""
    text = text if len(text) <= 300 else text[:300] + "..."
    if isinstance(e, TesseraError):
        return text or type(e).__name__
    return f"internal error {type(e).__name__}: {text}"


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"tessera: falling back to eager for this graph: {reason}", FallbackWarning, stacklevel=2)


def _check_options(options: Any) -> dict[str, Any]:
    """Validated options with defaults filled in; BackendOptionError names what is wrong."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise BackendOptionError(f"tessera backend options must be a dict, got {type(options).__name__}")
    unknown = sorted(str(k) for k in options if k not in _OPTIONS)
    if unknown:
        raise BackendOptionError(f"unknown tessera backend option(s) {', '.join(map(repr, unknown))}; "
                                 f"valid options: {', '.join(_OPTIONS)}")
    opts = {"target": "host", "num_threads": None, "freeze": False, **options}
    n = opts["num_threads"]
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise BackendOptionError(f"tessera backend option 'num_threads' must be a positive int or None, got {n!r}")
    if not isinstance(opts["freeze"], bool):
        raise BackendOptionError(f"tessera backend option 'freeze' must be a bool, got {opts['freeze']!r}")
    _check_target(opts["target"])
    return opts


def _check_target(target: Any) -> None:
    from tessera.targets import CpuTarget, load_target
    from tessera.targets.npu_target import is_npu_target

    if isinstance(target, CpuTarget) or is_npu_target(target):
        return
    if not isinstance(target, str):
        raise BackendOptionError(f"tessera backend option 'target' must be a target name or path, got {target!r}")
    try:
        load_target(target)
    except TesseraError as e:
        raise BackendOptionError(f"tessera backend option 'target': {e}") from None


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
            if str(val.dtype).removeprefix("torch.") not in _NUMPY_DTYPE_NAMES:
                raise _Unsupported(f"outputs of dtype {val.dtype} have no NumPy equivalent")
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


def _concrete(args: Sequence[Any]) -> list[Any] | None:
    """The arguments with fake tensors (AOTAutograd's) replaced by real ones of the same shape, dtype and
    strides; None when a size is symbolic (``dynamic=True``): then compile on the first call."""
    import torch
    from torch._dynamo.utils import defake
    from torch._subclasses.fake_tensor import is_fake
    from torch.utils._python_dispatch import _disable_current_modes

    if not all(isinstance(a, torch.Tensor | int | float | bool) and not isinstance(a, torch.SymInt | torch.SymFloat)
               for a in args):
        return None
    if any(isinstance(a, torch.Tensor) and not all(isinstance(d, int) for d in (*a.shape, *a.stride()))
           for a in args):
        return None
    with _disable_current_modes():
        return [defake(a) if isinstance(a, torch.Tensor) and is_fake(a) else a for a in args]


def _needs_autograd(gm: Any, args: Sequence[Any]) -> bool:
    """Whether the graph's results may carry autograd history: grad mode with inputs or parameters
    requiring grad, or any value Dynamo traced as requiring grad (``torch.enable_grad()`` inside)."""
    import torch

    if any(n.op != "placeholder" and getattr(n.meta.get("example_value"), "requires_grad", False) is True
           for n in gm.graph.nodes):
        return True
    if not torch.is_grad_enabled():
        return False
    return (any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
            or any(p.requires_grad for p in gm.parameters()))


def tessera_backend(
    gm: Any, example_inputs: Sequence[Any], options: dict[str, Any] | None = None, mode: str | None = None,
) -> Callable[..., Any]:
    """TorchDynamo backend: return a callable running ``gm`` through Tessera-compiled code (through
    AOTAutograd when it needs gradients), or eagerly (with one warning per reason) when it cannot be.
    Raises BackendOptionError for unknown or malformed options, or a ``torch.compile`` mode."""
    if mode not in (None, "default"):
        raise BackendOptionError(f"the tessera backend has no compile modes (mode={mode!r}); "
                                 f"its options are {', '.join(_OPTIONS)}")
    opts = _check_options(options)
    if _needs_autograd(gm, example_inputs):
        return _training_graph(gm, example_inputs, opts)
    return _graph(gm, example_inputs, opts)


def _training_graph(gm: Any, example_inputs: Sequence[Any], opts: dict[str, Any]) -> Callable[..., Any]:
    """AOTAutograd splits the graph into forward and backward ATen graphs; Tessera compiles each."""
    from torch._decomp import core_aten_decompositions
    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.exc import RestartAnalysis
    from torch._functorch.aot_autograd import make_boxed_func

    opts = {**opts, "freeze": False}  # parameters change every step

    def compiler(part: str) -> Callable[..., Any]:
        def compile_part(g: Any, inputs: Sequence[Any]) -> Callable[..., Any]:
            return make_boxed_func(_graph(g, inputs, opts, part))
        return compile_part

    try:
        return aot_autograd(fw_compiler=compiler("forward"), bw_compiler=compiler("backward"),
                            inference_compiler=compiler("forward"),
                            decompositions=core_aten_decompositions())(gm, example_inputs)
    except RestartAnalysis:
        raise
    except Exception as e:  # AOTAutograd could not trace it: eager keeps autograd exact
        _warn_once(f"{_reason(e)} (while tracing the graph for autograd)")
        return gm.forward


def _graph(gm: Any, example_inputs: Sequence[Any], opts: dict[str, Any], part: str = "") -> Callable[..., Any]:
    """A callable running one graph through Tessera, falling back to ``gm.forward`` on any failure."""
    import torch
    from torch._dynamo.exc import RestartAnalysis
    from torch.utils._pytree import tree_unflatten

    import tessera

    numpy_dtypes = {getattr(torch, n) for n in _NUMPY_DTYPE_NAMES}
    target, num_threads, freeze = opts["target"], opts["num_threads"], opts["freeze"]
    cache: dict[tuple[Any, ...], Any] = {}
    state = {"eager": False}
    suffix = f" (in the {part} graph)" if part else ""

    def fall_back(e: BaseException) -> Callable[..., Any]:
        state["eager"] = True
        _warn_once(_reason(e) + suffix)
        return gm.forward

    def compile_for(args: Sequence[Any]) -> Any:
        if len(cache) >= MAX_SIGNATURES:
            raise _Unsupported(f"more than {MAX_SIGNATURES} distinct input signatures (shapes, dtypes, scalar values)")
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
        if (concrete := _concrete(example_inputs)) is not None:
            cache[_signature(concrete, freeze)] = compile_for(concrete)
    except RestartAnalysis:
        raise
    except Exception as e:  # every failure of Tessera's own is an eager fallback, never a failed call
        return fall_back(e)

    def run_compiled(args: Sequence[Any]) -> Any:
        key = _signature(args, freeze)
        cm = cache.get(key)
        if cm is None:
            cm = cache[key] = compile_for(args)
        arrays = [_to_numpy(a) for a in args if isinstance(a, torch.Tensor)
                  and not (freeze and isinstance(a, torch.nn.Parameter))]
        outs = cm(*arrays)
        leaves = [torch.from_numpy(outs[v]) if kind == "out" else args[v] if kind == "arg" else v
                  for kind, v in plan]
        return tree_unflatten(leaves, spec)

    def run(*args: Any) -> Any:
        if state["eager"]:
            return gm.forward(*args)
        try:
            return run_compiled(args)
        except Exception as e:
            error = e
        out = gm.forward(*args)  # outside the handler: an error of the model's own surfaces unchanged
        fall_back(error)
        return out

    run.tessera_cache = cache  # type: ignore[attr-defined]  (for tests and debugging)
    return run


def _import(module: Any, inputs: list[Any]) -> Any:
    """Import in a fresh thread: torch's thread-local state of the caller would leak into torch.export
    (Dynamo's tracing context lends its fake mode and guards on Dynamo's sources, e.g. ``L['x']``; inside
    AOTAutograd's forward the autograd dispatch keys are excluded, which breaks functionalization)."""
    from concurrent.futures import ThreadPoolExecutor

    from tessera.frontend.torch_importer import import_torch

    names = [f"input_{i}" for i in range(len(inputs))]
    with ThreadPoolExecutor(1, thread_name_prefix="tessera-import") as pool:
        return pool.submit(import_torch, module, tuple(inputs), input_names=names).result()
