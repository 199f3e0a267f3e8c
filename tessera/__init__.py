"""Tessera: a retargetable deep-learning compiler and runtime."""

from __future__ import annotations

VERSION = "0.1.0"

__all__ = ["VERSION", "compile", "load_artifact", "load_model", "run_reference"]


def __getattr__(name: str):  # lazy: `import tessera` stays cheap (no torch, no onnx)
    if name == "load_model":
        from tessera.api import load_model

        return load_model
    if name == "compile":
        from tessera.compiler import compile

        return compile
    if name == "load_artifact":
        from tessera.runtime.artifact import load_artifact

        return load_artifact
    if name == "run_reference":
        from tessera.graph.reference import run_reference

        return run_reference
    raise AttributeError(name)
