"""CPU targets: data-file descriptions, host detection, and the C toolchain driver."""

from __future__ import annotations

from tessera.targets.host import host_arch, host_isa_features, host_target, is_native
from tessera.targets.target import (
    Caches,
    CompilerSpec,
    CpuTarget,
    Intrinsic,
    TargetError,
    list_targets,
    load_target,
    parse_target,
)
from tessera.targets.toolchain import (
    build_executable,
    build_shared_library,
    cache_dir,
    compiler_available,
    run_executable,
    runner_available,
)

__all__ = [
    "Caches", "CompilerSpec", "CpuTarget", "Intrinsic", "TargetError", "build_executable",
    "build_shared_library", "cache_dir", "compiler_available", "host_arch", "host_isa_features",
    "host_target", "is_native", "list_targets", "load_target", "parse_target", "run_executable",
    "runner_available",
]
