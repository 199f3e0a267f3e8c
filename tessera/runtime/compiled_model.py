"""A compiled model: the shared library loaded with ctypes, its weights and its activation arena."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tessera.runtime.cache import cached_library, sha256_hex
from tessera.runtime.inputs import bind_inputs, check_input
from tessera.runtime.program import (
    ArtifactError,
    ExecutionError,
    Manifest,
    TensorSpec,
    check_host_compatible,
)

__all__ = ["CompiledModel", "aligned_empty", "ALIGNMENT", "default_num_threads"]

ALIGNMENT = 64


def aligned_empty(nbytes: int, alignment: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised uint8 array of ``nbytes`` whose data pointer is ``alignment``-aligned."""
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + nbytes]


def _aligned_like(spec: TensorSpec) -> np.ndarray:
    return aligned_empty(spec.nbytes).view(spec.np_dtype).reshape(spec.shape)


_loaded_lock = threading.Lock()
_loaded: dict[str, str] = {}  # resolved path -> sha256 of the library this process dlopen'ed there


def _dlopen(path: Path, data: bytes, sha: str) -> ctypes.CDLL:
    """dlopen ``path``; if this process already loaded a *different* library from the same path
    (dlopen would silently hand back the stale one), load a content-addressed copy instead."""
    with _loaded_lock:
        key = str(path.resolve())
        if _loaded.setdefault(key, sha) != sha:
            path = cached_library(data, sha)
            _loaded[str(path.resolve())] = sha
        try:
            return ctypes.CDLL(str(path))
        except OSError as e:
            raise ArtifactError(f"cannot load compiled library {path}: {e}") from e


def default_num_threads() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's core count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class CompiledModel:
    """Callable compiled model. ``model(x, y)`` or ``model({"x": x, "y": y})`` returns the list of
    outputs (fresh arrays each call); :meth:`run_dict` returns them by name.

    Inputs must have exactly the declared dtype and static shape (Python lists/scalars are
    converted when the conversion is lossless in kind). One arena per model: concurrent calls
    are serialised by a lock. ``library_bytes``/``library_sha256`` hold the library as loaded, so
    the build directory may be deleted before :func:`~tessera.runtime.artifact.save_artifact`.
    """

    def __init__(
        self,
        library_path: str | os.PathLike[str],
        manifest: Manifest,
        weights: np.ndarray | bytes | bytearray | memoryview,
        *,
        copy_weights: bool = True,
        num_threads: int | None = None,
    ) -> None:
        self.library_path = Path(library_path)
        self.manifest = manifest
        check_host_compatible(manifest, str(self.library_path))
        self._weights = self._prepare_weights(weights, copy_weights)
        self._arena = aligned_empty(max(manifest.arena_bytes, 1))
        self._lock = threading.Lock()
        try:
            self.library_bytes = self.library_path.read_bytes()
        except OSError as e:
            raise ArtifactError(f"cannot load compiled library {self.library_path}: {e}") from e
        self.library_sha256 = sha256_hex(self.library_bytes)
        self._lib = _dlopen(self.library_path, self.library_bytes, self.library_sha256)
        try:
            self._run = self._lib.tsr_run
            self._set_threads = self._lib.tsr_set_num_threads
        except AttributeError as e:
            raise ArtifactError(f"{self.library_path} is not a Tessera model library (missing symbol: {e})") from e
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._run.restype = ctypes.c_int
        self._set_threads.argtypes = [ctypes.c_int]
        self._set_threads.restype = None
        self._num_threads = 0
        self.num_threads = num_threads if num_threads is not None else default_num_threads()

    def _prepare_weights(self, weights: Any, copy: bool) -> np.ndarray:
        if isinstance(weights, np.ndarray):
            flat = weights.reshape(-1).view(np.uint8) if weights.flags.c_contiguous else None
        else:
            flat = np.frombuffer(weights, dtype=np.uint8)
        if flat is None:
            flat = np.ascontiguousarray(weights).reshape(-1).view(np.uint8)
        if flat.nbytes != self.manifest.weights_nbytes:
            raise ArtifactError(
                f"model {self.manifest.model_name!r}: weights blob has {flat.nbytes} bytes, "
                f"manifest declares {self.manifest.weights_nbytes}"
            )
        if copy or flat.ctypes.data % ALIGNMENT or not flat.flags.writeable:
            buf = aligned_empty(flat.nbytes)
            buf[...] = flat
            return buf
        return flat

    # -- properties ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.model_name

    @property
    def input_specs(self) -> list[TensorSpec]:
        return list(self.manifest.inputs)

    @property
    def output_specs(self) -> list[TensorSpec]:
        return list(self.manifest.outputs)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.manifest.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.manifest.outputs]

    @property
    def weights(self) -> np.ndarray:
        """The weights blob (read-only view of the 64-byte-aligned buffer the library reads)."""
        view = self._weights.view()
        view.flags.writeable = False
        return view

    @property
    def num_threads(self) -> int:
        """Threads of the library's pool (caller included); setting it calls ``tsr_set_num_threads``."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"num_threads must be a positive integer, got {n!r}")
        with self._lock:
            self._set_threads(int(n))
            self._num_threads = int(n)

    # -- running ------------------------------------------------------------------------------
    @staticmethod
    def _check_input(spec: TensorSpec, value: Any) -> np.ndarray:
        arr = check_input(spec, value)
        if arr.flags.c_contiguous and arr.ctypes.data % ALIGNMENT == 0:
            return arr
        out = _aligned_like(spec)
        out[...] = arr
        return out

    def __call__(self, *args: Any) -> list[np.ndarray]:
        """Run the model; inputs positionally or as one mapping by input name."""
        values = bind_inputs(self.name, self.manifest.inputs, args)
        arrays = [self._check_input(s, v) for s, v in zip(self.manifest.inputs, values, strict=True)]
        outputs = [_aligned_like(s) for s in self.manifest.outputs]
        in_ptrs = (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * len(outputs))(*[o.ctypes.data for o in outputs])
        with self._lock:
            status = self._run(in_ptrs, out_ptrs, self._weights.ctypes.data, self._arena.ctypes.data)
        if status != 0:
            raise ExecutionError(f"model {self.name!r}: tsr_run failed with status {status} ({self.library_path})")
        return outputs

    def run_dict(self, *args: Any) -> dict[str, np.ndarray]:
        """Like calling the model, but returns ``{output name: array}``."""
        return dict(zip(self.output_names, self(*args), strict=True))

    def __repr__(self) -> str:
        sig = ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}" for s in self.manifest.inputs)
        return (
            f"CompiledModel({self.name!r}, ({sig}) -> {len(self.manifest.outputs)} output(s), "
            f"target={self.manifest.target.name!r}, arena={self.manifest.arena_bytes} B, threads={self.num_threads})"
        )
