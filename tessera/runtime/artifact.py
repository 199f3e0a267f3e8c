"""The single-file deployable artifact: a zip holding exactly ``manifest.json``, ``model.so``,
``weights.bin`` and ``digest.json``. Loading it needs only NumPy and this package (no compiler,
no torch, no onnx).

An artifact holds native code, run when it is loaded: trust it as you would an executable.
``digest.json`` holds one SHA-256 over every other member (a corruption check) and, when a key is
set (``key=`` or ``$TESSERA_ARTIFACT_KEY``), an HMAC-SHA256 of that digest. With a key set, loading
refuses an unsigned artifact or a bad signature before the library is written anywhere or loaded.

Saving is atomic and leaves nothing behind if killed (:func:`tessera.utils.atomic_file`); the
target's directory must exist. Loading checks the member list (no duplicates, nothing else), the
digest and signature, the manifest, the target architecture, then extracts the library to a
content-addressed cache (``$TESSERA_CACHE_DIR/artifacts/<sha256>.so``, default
``~/.cache/tessera/artifacts``) from which it is loaded; the loader then compares the library's
own ABI with the manifest (:class:`~tessera.runtime.compiled_model.CompiledModel`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

from tessera.limits import check_allocation
from tessera.runtime.cache import cache_dir, cached_library, sha256_hex
from tessera.runtime.compiled_model import CompiledModel, aligned_empty
from tessera.runtime.program import FORMAT_VERSION, ArtifactError, Manifest, check_host_compatible
from tessera.utils import atomic_file

__all__ = ["save_artifact", "load_artifact", "read_manifest", "cache_dir", "KEY_ENV",
           "MANIFEST", "LIBRARY", "WEIGHTS", "DIGEST"]

MANIFEST = "manifest.json"
LIBRARY = "model.so"
WEIGHTS = "weights.bin"
DIGEST = "digest.json"
MEMBERS = (MANIFEST, LIBRARY, WEIGHTS, DIGEST)
KEY_ENV = "TESSERA_ARTIFACT_KEY"
_DIGESTED = (MANIFEST, LIBRARY, WEIGHTS)  # in this order
_MAX_MANIFEST = 64 << 20
_MAX_DIGEST = 4096
_CHUNK = 1 << 22


def _copy_chunks(src: memoryview, dst: IO[bytes]) -> None:
    for start in range(0, len(src), _CHUNK):
        dst.write(src[start : start + _CHUNK])


def _resolve_key(key: str | bytes | None) -> bytes | None:
    """The signing key: ``key`` if given, else ``$TESSERA_ARTIFACT_KEY`` (unset or empty: none)."""
    if key is None:
        env = os.environ.get(KEY_ENV)
        return env.encode() if env else None
    data = key.encode() if isinstance(key, str) else bytes(key)
    if not data:
        raise ArtifactError("the artifact key must not be empty")
    return data


class _Digest:
    """SHA-256 over the digested members, each framed by its name and length."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(f"{FORMAT_VERSION}\n".encode())

    def member(self, name: str, size: int) -> None:
        self._h.update(f"{name}\n{size}\n".encode())

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _sign(key: bytes, digest: str) -> str:
    return hmac.new(key, bytes.fromhex(digest), hashlib.sha256).hexdigest()


def save_artifact(model: CompiledModel, path: str | os.PathLike[str], *, key: str | bytes | None = None) -> Path:
    """Write ``model`` as one artifact file at ``path`` (atomically; its directory must exist);
    returns the path. Signed with ``key`` (default ``$TESSERA_ARTIFACT_KEY``) when one is set."""
    path = Path(path)
    signing_key = _resolve_key(key)
    library = model.library_bytes
    weights = memoryview(model.weights).cast("B")
    manifest = Manifest.from_dict(model.manifest.to_dict())
    manifest.library_sha256 = sha256_hex(library)
    manifest.weights_sha256 = sha256_hex(weights)
    return _write(path, manifest.to_json().encode(), library, weights, signing_key)


def _write(path: Path, manifest_bytes: bytes, library: bytes, weights: memoryview, key: bytes | None) -> Path:
    """The artifact file from its members' bytes: digest, signature with ``key``, zip, atomic write."""
    digest = _Digest()
    for name, data in ((MANIFEST, manifest_bytes), (LIBRARY, library), (WEIGHTS, weights)):
        digest.member(name, len(data))
        digest.update(data)
    seal = {"format": FORMAT_VERSION, "sha256": digest.hexdigest(),
            "hmac_sha256": _sign(key, digest.hexdigest()) if key else None}
    with atomic_file(path) as f, zipfile.ZipFile(f, "w") as zf:
        zf.writestr(MANIFEST, manifest_bytes, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(LIBRARY, library, compress_type=zipfile.ZIP_DEFLATED)
        # Weights stay uncompressed: float data barely compresses and loads faster stored.
        info = zipfile.ZipInfo(WEIGHTS, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        with zf.open(info, "w", force_zip64=len(weights) >= 1 << 31) as dst:
            _copy_chunks(weights, dst)
        zf.writestr(DIGEST, json.dumps(seal, indent=1), compress_type=zipfile.ZIP_DEFLATED)
    return path


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise ArtifactError(f"artifact not found: {path}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ArtifactError(f"{path} is not a valid Tessera artifact (truncated or corrupt: {e})") from e
    try:
        _check_members(zf, path)
    except BaseException:
        zf.close()
        raise
    return zf


def _check_members(zf: zipfile.ZipFile, path: Path) -> None:
    names = [i.filename for i in zf.infolist()]
    dups = sorted(n for n, c in Counter(names).items() if c > 1)
    if dups:
        shown = ", ".join(repr(n) for n in dups[:5])
        raise ArtifactError(f"{path} is not a valid Tessera artifact (duplicate member(s) {shown})")
    extra = sorted(set(names) - set(MEMBERS))
    if extra:
        shown = ", ".join(repr(n) for n in extra[:5]) + (", ..." if len(extra) > 5 else "")
        raise ArtifactError(f"{path} is not a valid Tessera artifact (unexpected member(s) {shown})")
    missing = [m for m in MEMBERS if m not in names]
    if missing == [DIGEST]:  # an artifact of an older format says so in its manifest
        Manifest.from_json(_read_member(zf, MANIFEST, path, _MAX_MANIFEST), source=f"{path}:{MANIFEST}")
    if missing:
        raise ArtifactError(f"{path} is not a valid Tessera artifact (missing {', '.join(missing)})")


def _read_member(zf: zipfile.ZipFile, name: str, path: Path, limit: int | None = None) -> bytes:
    size = zf.getinfo(name).file_size
    if limit is not None and size > limit:
        raise ArtifactError(f"{path}: {name} is {size} bytes, more than a Tessera artifact ever holds ({limit})")
    check_allocation(size, f"{path}: {name}")
    try:
        with zf.open(name) as src:
            data = src.read(size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as e:
        raise ArtifactError(f"{path}: cannot read {name} (truncated or corrupt: {e})") from e
    except Exception as e:  # zlib.error and friends from a damaged compressed stream
        raise ArtifactError(f"{path}: cannot read {name} (corrupt: {e})") from e
    if len(data) != size:
        raise ArtifactError(f"{path}: {name} holds {len(data)} bytes, the zip directory says {size}")
    return data


def _read_weights(zf: zipfile.ZipFile, path: Path, digest: _Digest) -> np.ndarray:
    size = check_allocation(zf.getinfo(WEIGHTS).file_size, f"{path}: {WEIGHTS}")
    buf = aligned_empty(size)
    view = memoryview(buf)
    digest.member(WEIGHTS, size)
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
    except Exception as e:  # zlib.error from a member that claims to be compressed
        raise ArtifactError(f"{path}: cannot read {WEIGHTS} (corrupt: {e})") from e
    if pos != size:
        raise ArtifactError(f"{path}: {WEIGHTS} is truncated ({pos} of {size} bytes)")
    return buf


def _read_seal(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    raw = _read_member(zf, DIGEST, path, _MAX_DIGEST)
    try:
        seal = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"{path}: {DIGEST} is not valid JSON ({e})") from e
    if not isinstance(seal, dict) or set(seal) != {"format", "sha256", "hmac_sha256"}:
        raise ArtifactError(f"{path}: {DIGEST} must be an object with keys format, sha256, hmac_sha256")
    if seal["format"] != FORMAT_VERSION:
        raise ArtifactError(f"{path}: {DIGEST}: unsupported artifact format {str(seal['format'])[:80]!r} "
                            f"(this runtime reads {FORMAT_VERSION!r})")
    for k in ("sha256", "hmac_sha256"):
        v = seal[k]
        if not (v is None and k == "hmac_sha256") and not _is_hex64(v):
            raise ArtifactError(f"{path}: {DIGEST}: field {k!r} must be 64 hex digits")
    return seal


def _is_hex64(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _verified(zf: zipfile.ZipFile, path: Path, key: bytes | None) -> tuple[bytes, bytes, np.ndarray]:
    """Manifest bytes, library and weights, after the digest (and signature, with ``key``) checked out."""
    seal = _read_seal(zf, path)
    if key is not None and seal["hmac_sha256"] is None:
        raise ArtifactError(f"{path}: artifact is not signed, and a signing key is set ({KEY_ENV} or key=): "
                            "refusing to load it")
    digest = _Digest()
    parts: list[bytes] = []
    for name in (MANIFEST, LIBRARY):
        data = _read_member(zf, name, path, _MAX_MANIFEST if name == MANIFEST else None)
        digest.member(name, len(data))
        digest.update(data)
        parts.append(data)
    weights = _read_weights(zf, path, digest)
    if not hmac.compare_digest(digest.hexdigest(), seal["sha256"]):
        raise ArtifactError(f"{path}: digest mismatch over {', '.join(_DIGESTED)} (file is corrupt or was modified)")
    if key is not None and not hmac.compare_digest(_sign(key, seal["sha256"]), seal["hmac_sha256"]):
        raise ArtifactError(f"{path}: bad signature: the artifact was not signed with this key, or was modified")
    return parts[0], parts[1], weights


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of an artifact file, without loading the library (not checked against the
    digest: :func:`load_artifact` does that)."""
    path = Path(path)
    with _open_zip(path) as zf:
        return Manifest.from_json(_read_member(zf, MANIFEST, path, _MAX_MANIFEST), source=f"{path}:{MANIFEST}")


def _check_hashes(items: Iterable[tuple[str, str, bytes | np.ndarray]], path: Path) -> None:
    for name, want, data in items:
        if sha256_hex(memoryview(data).cast("B") if isinstance(data, np.ndarray) else data) != want:
            raise ArtifactError(f"{path}: {name} sha256 differs from the manifest's (file is corrupt or was modified)")


def load_artifact(path: str | os.PathLike[str], *, num_threads: int | None = None,
                  key: str | bytes | None = None) -> CompiledModel:
    """Load an artifact file written by :func:`save_artifact` and return the runnable model.

    With a key (``key=``, else ``$TESSERA_ARTIFACT_KEY``) only artifacts signed with it load."""
    path = Path(path)
    signing_key = _resolve_key(key)
    with _open_zip(path) as zf:
        manifest_bytes, library, weights = _verified(zf, path, signing_key)
    manifest = Manifest.from_json(manifest_bytes, source=f"{path}:{MANIFEST}")
    if weights.nbytes != manifest.weights_nbytes:
        raise ArtifactError(
            f"{path}: {WEIGHTS} has {weights.nbytes} bytes, manifest declares {manifest.weights_nbytes}"
        )
    _check_hashes(((LIBRARY, manifest.library_sha256, library),
                             (WEIGHTS, manifest.weights_sha256, weights)), path)
    check_host_compatible(manifest, str(path))
    sha = manifest.library_sha256  # just checked against the library's bytes
    return CompiledModel(cached_library(library, sha), manifest, weights, copy_weights=False, num_threads=num_threads,
                         source=str(path))
