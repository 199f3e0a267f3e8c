"""Model frontends: ONNX (always available) and PyTorch (imports torch only when used)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tessera.frontend.onnx_importer import import_onnx

if TYPE_CHECKING:
    from tessera.graph.ir import Graph

__all__ = ["import_onnx", "import_torch"]


def import_torch(
    module: Any,
    example_inputs: tuple,
    *,
    input_names: Sequence[str] | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    output_names: Sequence[str] | None = None,
) -> Graph:
    """Import a PyTorch module; see :func:`tessera.frontend.torch_importer.import_torch`."""
    from tessera.frontend.torch_importer import import_torch as _import_torch

    return _import_torch(module, example_inputs, input_names=input_names, dynamic_axes=dynamic_axes,
                         output_names=output_names)
