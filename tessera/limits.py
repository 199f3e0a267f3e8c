"""Memory requests checked against the machine before allocating (stdlib only).

Sizes come from models, artifacts and command lines, so a declared shape can ask for terabytes.
Every layer calls :func:`check_allocation` before it allocates a buffer whose size it read from
input: a request beyond what the machine can give becomes a :class:`ResourceLimitError` (one
line, exit status 2 on the command line) instead of a ``MemoryError`` traceback, or worse, the
kernel's OOM killer.
"""

from __future__ import annotations

import os

from tessera.errors import TesseraError

__all__ = ["ResourceLimitError", "available_memory_bytes", "check_allocation", "format_bytes"]


class ResourceLimitError(TesseraError):
    """A model, artifact or argument asks for more memory than this machine has."""


def format_bytes(n: int) -> str:
    """``n`` bytes as a short human-readable figure (``"8.0 TiB"``)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def available_memory_bytes() -> int:
    """The most one process can hope to allocate: ``$TESSERA_MEMORY_LIMIT`` (bytes) when set, else
    physical memory plus swap (``/proc/meminfo``), else physical memory from ``sysconf``."""
    env = os.environ.get("TESSERA_MEMORY_LIMIT")
    if env:
        try:
            return max(int(env), 0)
        except ValueError as e:
            raise ResourceLimitError(f"TESSERA_MEMORY_LIMIT must be a number of bytes, got {env!r}") from e
    try:
        fields: dict[str, int] = {}
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    fields[key] = int(parts[0]) * 1024
        if "MemTotal" in fields:
            return fields["MemTotal"] + fields.get("SwapTotal", 0)
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_allocation(nbytes: int, what: str) -> int:
    """Return ``nbytes`` if this machine could allocate it; else raise :class:`ResourceLimitError`
    naming ``what`` (e.g. ``"constant 'w' of node 'range_0'"``) and both sizes."""
    nbytes = int(nbytes)
    if nbytes < 0:
        raise ResourceLimitError(f"{what}: negative size ({nbytes} bytes)")
    limit = available_memory_bytes()
    if nbytes > limit:
        raise ResourceLimitError(
            f"{what} needs {format_bytes(nbytes)} ({nbytes} bytes), more than this machine's "
            f"{format_bytes(limit)} of memory"
        )
    return nbytes
