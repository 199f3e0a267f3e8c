"""The single-file deployable artifact: a zip holding ``manifest.json``, ``model.so`` and
``weights.bin``. Loading it needs only NumPy and this package (no compiler, no torch, no onnx).

Saving is atomic (temporary file beside the target, then ``os.replace``). Loading verifies the
sha256 of the library and weights, checks the target architecture, and extracts the library to
a content-addressed cache (``$TESSERA_CACHE_DIR/artifacts/<sha256>.so``, default
``~/.cache/tessera/artifacts``) from which it is loaded.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from tessera.runtime.cache import cache_dir, cached_library, sha256_hex
from tessera.runtime.compiled_model import CompiledModel, aligned_empty
from tessera.runtime.program import ArtifactError, Manifest, check_host_compatible
from tessera.utils import atomic_output

__all__ = ["save_artifact", "load_artifact", "read_manifest", "cache_dir", "MANIFEST", "LIBRARY", "WEIGHTS"]

MANIFEST = "manifest.json"
LIBRARY = "model.so"
WEIGHTS = "weights.bin"
_CHUNK = 1 << 22


def _copy_chunks(src: memoryview, dst: IO[bytes]) -> None:
    for start in range(0, len(src), _CHUNK):
        dst.write(src[start : start + _CHUNK])


def save_artifact(model: CompiledModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as one artifact file at ``path`` (atomically); returns the path.

    The manifest stored in the file records the sha256 of the library and the weights."""
    path = Path(path)
    library = model.library_bytes
    weights = memoryview(model.weights).cast("B")
    manifest = Manifest.from_dict(model.manifest.to_dict())
    manifest.library_sha256 = sha256_hex(library)
    manifest.weights_sha256 = sha256_hex(weights)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w") as zf:
                zf.writestr(MANIFEST, manifest.to_json(), compress_type=zipfile.ZIP_DEFLATED)
                zf.writestr(LIBRARY, library, compress_type=zipfile.ZIP_DEFLATED)
                # Weights stay uncompressed: float data barely compresses and loads faster stored.
                info = zipfile.ZipInfo(WEIGHTS, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                with zf.open(info, "w", force_zip64=len(weights) >= 1 << 31) as dst:
                    _copy_chunks(weights, dst)
            f.flush()
            os.fsync(f.fileno())
    return path


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise ArtifactError(f"artifact not found: {path}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ArtifactError(f"{path} is not a valid Tessera artifact (truncated or corrupt: {e})") from e
    missing = [m for m in (MANIFEST, LIBRARY, WEIGHTS) if m not in zf.namelist()]
    if missing:
        zf.close()
        raise ArtifactError(f"{path} is not a valid Tessera artifact (missing {', '.join(missing)})")
    return zf


def _read_member(zf: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as e:
        raise ArtifactError(f"{path}: cannot read {name} (truncated or corrupt: {e})") from e
    except Exception as e:  # zlib.error and friends from a damaged compressed stream
        raise ArtifactError(f"{path}: cannot read {name} (corrupt: {e})") from e


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of an artifact file, without loading the library."""
    path = Path(path)
    with _open_zip(path) as zf:
        return Manifest.from_json(_read_member(zf, MANIFEST, path), source=f"{path}:{MANIFEST}")


def _read_weights(zf: zipfile.ZipFile, manifest: Manifest, path: Path) -> np.ndarray:
    size = zf.getinfo(WEIGHTS).file_size
    if size != manifest.weights_nbytes:
        raise ArtifactError(f"{path}: {WEIGHTS} has {size} bytes, manifest declares {manifest.weights_nbytes}")
    buf = aligned_empty(size)
    view = memoryview(buf)
    digest = hashlib.sha256()
    pos = 0
    try:
        with zf.open(WEIGHTS) as src:
            while pos < size:
                n = src.readinto(view[pos : min(pos + _CHUNK, size)])
                if not n:
                    break
                digest.update(view[pos : pos + n])
                pos += n
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ArtifactError(f"{path}: cannot read {WEIGHTS} (truncated or corrupt: {e})") from e
    if pos != size:
        raise ArtifactError(f"{path}: {WEIGHTS} is truncated ({pos} of {size} bytes)")
    if manifest.weights_sha256 and digest.hexdigest() != manifest.weights_sha256:
        raise ArtifactError(f"{path}: {WEIGHTS} sha256 mismatch (file is corrupt or was modified)")
    return buf


def load_artifact(path: str | os.PathLike[str], *, num_threads: int | None = None) -> CompiledModel:
    """Load an artifact file written by :func:`save_artifact` and return the runnable model."""
    path = Path(path)
    with _open_zip(path) as zf:
        manifest = Manifest.from_json(_read_member(zf, MANIFEST, path), source=f"{path}:{MANIFEST}")
        if not manifest.library_sha256 or not manifest.weights_sha256:
            raise ArtifactError(f"{path}: manifest lacks the library/weights sha256")
        check_host_compatible(manifest, str(path))
        library = _read_member(zf, LIBRARY, path)
        sha = sha256_hex(library)
        if sha != manifest.library_sha256:
            raise ArtifactError(f"{path}: {LIBRARY} sha256 mismatch (file is corrupt or was modified)")
        weights = _read_weights(zf, manifest, path)
    return CompiledModel(cached_library(library, sha), manifest, weights, copy_weights=False, num_threads=num_threads)
