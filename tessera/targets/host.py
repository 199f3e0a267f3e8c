"""Host CPU detection: pick the best built-in description this machine runs, with measured cores/caches."""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
from pathlib import Path

from tessera.targets.target import CpuTarget, TargetError, available_cpus, list_targets, load_target

HOST_TARGET_ENV = "TESSERA_HOST_TARGET"
_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def host_arch() -> str:
    """This machine's architecture, normalized to a description ``arch`` ("x86_64", "aarch64", ...)."""
    machine = platform.machine().lower()
    return _ARCH_ALIASES.get(machine, machine)


@functools.cache
def host_isa_features() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (x86 ``flags``, Arm ``Features``); empty if unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def is_native(target: CpuTarget) -> bool:
    """Whether this machine can run code built for ``target`` directly (same arch, all ISA features)."""
    return target.arch == host_arch() and set(target.isa) <= host_isa_features()


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def host_caches(base: dict[str, int]) -> dict[str, int]:
    """``base`` (l1d/l2/l3/line) overridden by what /sys/devices/system/cpu/cpu0/cache reports."""
    found = dict(base)
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        entries = sorted(root.glob("index*"))
        seen = False
        for d in entries:
            level = int((d / "level").read_text())
            kind = (d / "type").read_text().strip()
            size = _parse_size((d / "size").read_text())
            line = int((d / "coherency_line_size").read_text())
            if level == 1 and kind == "Data":
                found["l1d"], found["line"] = size, line
            elif level in (2, 3) and kind in ("Unified", "Data"):
                found[f"l{level}"] = size
            seen = True
        if seen and not any((d / "level").read_text().strip() == "3" for d in entries):
            found["l3"] = 0
    except (OSError, ValueError):
        return dict(base)
    return found


def _detect_name() -> str:
    override = os.environ.get(HOST_TARGET_ENV, "").strip()
    if override:
        return override
    arch, features = host_arch(), host_isa_features()
    candidates = [t for t in map(load_target, list_targets()) if t.arch == arch and set(t.isa) <= features]
    if not candidates:
        raise TargetError(f"no built-in target description fits this machine (arch {arch}); "
                          f"write one (see tessera/targets/descriptions) and pass its path")
    return max(candidates, key=lambda t: (t.vector_bits, len(t.isa), t.name)).name


@functools.cache
def _host_target(name: str) -> CpuTarget:
    base = load_target(name)
    caches = host_caches(dataclasses.asdict(base.caches))
    return dataclasses.replace(base, cores=available_cpus(), caches=dataclasses.replace(base.caches, **caches))


def host_target() -> CpuTarget:
    """The best built-in target this machine runs natively (widest vectors whose ISA flags are all present),
    with ``cores`` = CPUs available to this process and caches from sysfs when readable.

    ``$TESSERA_HOST_TARGET`` (a target name or .toml path) overrides the detected description."""
    return _host_target(_detect_name())
