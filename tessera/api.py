"""Tessera's Python API: load models from files or the zoo."""

from __future__ import annotations

from pathlib import Path

from tessera.errors import ModelLoadError, TesseraError
from tessera.graph.ir import Graph

FRONTENDS = ("torch", "onnx")


def load_model(model: str | Path, frontend: str = "torch") -> Graph:
    """Load ``model`` into the graph IR.

    ``model`` is an ``.onnx`` file, a saved Tessera graph (``.tsr``) or a zoo model name; for
    zoo models ``frontend`` picks the path: ``torch`` (torch.export) or ``onnx`` (exported to
    ONNX with dynamic axes, then imported)."""
    from tessera.frontend.onnx_importer import import_onnx
    from tessera.graph.serialize import load_graph

    path = Path(model)
    if path.suffix == ".tsa":
        raise ModelLoadError(f"{path} is a compiled artifact, not a model (run it: tessera run {path} --input ...)")
    if path.suffix == ".tsr":
        return load_graph(path)
    if path.suffix == ".onnx" or path.exists():
        return import_onnx(path)
    return load_zoo_model(str(model), frontend)


def load_zoo_model(name: str, frontend: str = "torch", batch: int = 1) -> Graph:
    """Import zoo model ``name`` through ``frontend`` (``torch`` or ``onnx``)."""
    import tempfile

    from tessera.models import MODEL_NAMES, get_model

    if name not in MODEL_NAMES:
        raise ModelLoadError(
            f"{name!r} is neither a model file nor a zoo model (zoo: {', '.join(MODEL_NAMES)})"
        )
    if frontend not in FRONTENDS:
        raise TesseraError(f"unknown frontend {frontend!r} (choose from {', '.join(FRONTENDS)})")
    zm = get_model(name, batch=batch)
    if frontend == "torch":
        from tessera.frontend.torch_importer import import_torch

        return import_torch(zm.module, zm.example_inputs, input_names=zm.input_names,
                            dynamic_axes=zm.dynamic_axes, output_names=zm.output_names)
    from tessera.frontend.onnx_importer import import_onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.onnx"
        zm.export_onnx(out)
        return import_onnx(out)
