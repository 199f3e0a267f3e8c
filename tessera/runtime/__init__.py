"""Tessera runtime: static memory planning, compiled-model loading and single-file artifacts.

Imports only NumPy and the standard library, so a deployed artifact runs in an environment with
nothing but NumPy installed.
"""

from __future__ import annotations

from tessera.runtime.artifact import load_artifact, read_manifest, save_artifact
from tessera.runtime.compiled_model import CompiledModel, check_abi
from tessera.runtime.memory_plan import BufferLife, MemoryPlan, plan_memory
from tessera.runtime.program import (
    FORMAT_VERSION,
    ArtifactError,
    CompileInfo,
    ExecutionError,
    Manifest,
    MemoryStats,
    TargetInfo,
    TensorSpec,
    WeightSpec,
    abi_words,
)

__all__ = [
    "FORMAT_VERSION",
    "ArtifactError",
    "BufferLife",
    "CompileInfo",
    "CompiledModel",
    "ExecutionError",
    "Manifest",
    "MemoryPlan",
    "MemoryStats",
    "TargetInfo",
    "TensorSpec",
    "WeightSpec",
    "abi_words",
    "check_abi",
    "load_artifact",
    "plan_memory",
    "read_manifest",
    "save_artifact",
]
