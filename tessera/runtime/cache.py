"""Content-addressed cache of model libraries (stdlib only)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tessera.runtime.program import ArtifactError
from tessera.utils import atomic_file

__all__ = ["cache_dir", "sha256_hex", "cached_library"]


def cache_dir() -> Path:
    """Where libraries are extracted: ``$TESSERA_CACHE_DIR/artifacts``, else
    ``$XDG_CACHE_HOME/tessera/artifacts`` (default ``~/.cache/tessera/artifacts``)."""
    root = os.environ.get("TESSERA_CACHE_DIR")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tessera"
    return base / "artifacts"


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_library(library: bytes, sha: str | None = None) -> Path:
    """Path of ``<cache>/<sha256>.so`` holding ``library``; written atomically if absent or damaged
    (mode ``0o777 & ~umask``: it is mapped executable).

    Never rewritten in place: a library already loaded by this or another process stays intact."""
    sha = sha or sha256_hex(library)
    target = cache_dir() / f"{sha}.so"
    try:
        if target.is_file() and sha256_hex(target.read_bytes()) == sha:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target, mode=0o777) as f:
            f.write(library)
    except OSError as e:
        raise ArtifactError(f"cannot write the model library to the cache {target}: {e}") from e
    return target
