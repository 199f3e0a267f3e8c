"""A compiled model: the shared library loaded with ctypes, its weights and its activation arena."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tessera.limits import check_allocation
from tessera.runtime.cache import cached_library, sha256_hex
from tessera.runtime.inputs import bind_inputs, check_input
from tessera.runtime.program import (
    ABI_MAGIC,
    ABI_VERSION,
    DTYPE_CODES,
    ArtifactError,
    ExecutionError,
    Manifest,
    TensorSpec,
    check_host_compatible,
)

__all__ = ["CompiledModel", "aligned_empty", "ALIGNMENT", "check_abi", "default_num_threads"]

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


_ENTRY_POINTS = ("tsr_run", "tsr_set_num_threads", "tsr_abi")
_HEADER = ("ABI magic", "ABI version", "arena bytes", "weights bytes", "input count", "output count")
_CODE_NAMES = {v: k for k, v in DTYPE_CODES.items()}


def _describe_abi(words: list[int], n_in: int) -> list[tuple[str, Any]]:
    """(what, value) pairs of ABI words, for saying where a library and a manifest differ."""
    out: list[tuple[str, Any]] = list(zip(_HEADER, words[: len(_HEADER)], strict=False))
    pos, k = len(_HEADER), 0
    while pos < len(words):
        who = f"input {k}" if k < n_in else f"output {k - n_in}"
        out.append((f"{who} dtype", _CODE_NAMES.get(words[pos], f"code {words[pos]}")))
        out.append((f"{who} bytes", words[pos + 1] if pos + 1 < len(words) else None))
        rank = words[pos + 2] if pos + 2 < len(words) else 0
        dims = words[pos + 3 : pos + 3 + max(rank, 0)]
        out.append((f"{who} dims", dims))
        pos, k = pos + 3 + max(rank, 0), k + 1
    return out


def check_abi(lib: ctypes.CDLL, manifest: Manifest, source: str) -> None:
    """Raise :class:`ArtifactError` unless the library's exported ABI (``tsr_abi``) equals what the
    manifest declares: arena and weights bytes, input/output count, and each one's dtype, bytes, dims."""
    fn = lib.tsr_abi
    fn.argtypes = [ctypes.POINTER(ctypes.c_longlong), ctypes.c_longlong]
    fn.restype = ctypes.c_longlong
    want = manifest.abi_words()
    buf = (ctypes.c_longlong * len(want))()
    n = int(fn(buf, len(want)))
    got = list(buf[: max(0, min(n, len(want)))])
    if n == len(want) and got == want:
        return
    if got[:2] != [ABI_MAGIC, ABI_VERSION]:
        raise ArtifactError(f"{source}: the library exports ABI {got[:2]}, this runtime reads "
                            f"[{ABI_MAGIC}, {ABI_VERSION}]; recompile the model")
    lib_desc = _describe_abi(got, got[4] if len(got) > 4 else 0)
    man_desc = _describe_abi(want, len(manifest.inputs))
    diff = next(((a, b) for a, b in zip(lib_desc, man_desc, strict=False) if a != b), None)
    if diff is None:
        detail = f"the library describes {n} ABI words, the manifest {len(want)}"
    else:
        detail = f"{diff[1][0]}: library {diff[0][1]}, manifest {diff[1][1]}"
    raise ArtifactError(
        f"{source}: manifest of model {manifest.model_name!r} does not match its library ({detail}); "
        "the artifact was modified or is corrupt"
    )


def default_num_threads() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's core count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class CompiledModel:
    """Callable compiled model. ``model(x, y)`` or ``model({"x": x, "y": y})`` returns the list of
    outputs (fresh arrays each call); :meth:`run_dict` returns them by name.

    Before any call into the library, its exported ABI (``tsr_abi``) must equal what the manifest
    declares (:func:`check_abi`), so no manifest can make a call read or write outside its buffers.
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
        source: str | None = None,
    ) -> None:
        self.library_path = Path(library_path)
        self.manifest = manifest
        manifest.validate()
        source = source or str(self.library_path)  # what messages name: the artifact file, else the library
        check_host_compatible(manifest, source)
        # what the calls allocate, fixed here: later edits of self.manifest cannot change it
        self._inputs = tuple(manifest.inputs)
        self._outputs = tuple(manifest.outputs)
        check_allocation(manifest.arena_bytes + manifest.weights_nbytes
                         + sum(s.nbytes for s in (*self._inputs, *self._outputs)),
                         f"model {manifest.model_name!r} (arena, weights, inputs and outputs)")
        try:
            self.library_bytes = self.library_path.read_bytes()
        except OSError as e:
            raise ArtifactError(f"cannot load compiled library {self.library_path}: {e}") from e
        self.library_sha256 = sha256_hex(self.library_bytes)
        self._lib = _dlopen(self.library_path, self.library_bytes, self.library_sha256)
        missing = [name for name in _ENTRY_POINTS if not hasattr(self._lib, name)]
        if missing == ["tsr_abi"]:
            raise ArtifactError(f"{source} does not export its ABI (tsr_abi): it was built by an older Tessera "
                                "or by hand; recompile the model")
        if missing:
            raise ArtifactError(f"{source} is not a Tessera model library (missing symbol: {', '.join(missing)})")
        check_abi(self._lib, manifest, source)  # before any other call into the library
        self._weights = self._prepare_weights(weights, copy_weights)
        self._arena = aligned_empty(max(manifest.arena_bytes, 1))
        self._lock = threading.Lock()
        self._run = self._lib.tsr_run
        self._set_threads = self._lib.tsr_set_num_threads
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
        return list(self._inputs)

    @property
    def output_specs(self) -> list[TensorSpec]:
        return list(self._outputs)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self._outputs]

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
        values = bind_inputs(self.name, self._inputs, args)
        arrays = [self._check_input(s, v) for s, v in zip(self._inputs, values, strict=True)]
        outputs = [_aligned_like(s) for s in self._outputs]
        in_ptrs = (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * len(outputs))(*[o.ctypes.data for o in outputs])
        with self._lock:
            status = self._run(in_ptrs, out_ptrs, self._weights.ctypes.data, self._arena.ctypes.data)
            what = self._error_message() if status != 0 else ""
        if status != 0:  # what the library says went wrong (an index out of range names its node), or the status
            raise ExecutionError(f"model {self.name!r}: {what}" if what else
                                 f"model {self.name!r}: tsr_run failed with status {status} ({self.library_path})")
        return outputs

    def _error_message(self) -> str:
        """What the library says its last failed run met (``tsr_error_message``; "" if it cannot say)."""
        texts = []
        for symbol in ("tsr_error_where", "tsr_error_message"):  # absent from libraries built before index checks
            fn = getattr(self._lib, symbol, None)
            if fn is None:
                continue
            fn.argtypes = []
            fn.restype = ctypes.c_char_p
            text = (fn() or b"")[:1000].decode("utf-8", "replace")
            if text:
                texts.append(text)
        return ": ".join(texts)

    def run_dict(self, *args: Any) -> dict[str, np.ndarray]:
        """Like calling the model, but returns ``{output name: array}``."""
        return dict(zip(self.output_names, self(*args), strict=True))

    def __repr__(self) -> str:
        sig = ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}" for s in self._inputs)
        return (
            f"CompiledModel({self.name!r}, ({sig}) -> {len(self._outputs)} output(s), "
            f"target={self.manifest.target.name!r}, arena={self.manifest.arena_bytes} B, threads={self.num_threads})"
        )
