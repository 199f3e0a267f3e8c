"""The manifest of a compiled model: what the shared library expects and how to check it.

A compiled model is one shared library exporting::

    int tsr_run(void* const* inputs, void* const* outputs, char* weights, char* arena);  /* 0 = ok */
    void tsr_set_num_threads(int n);
    int64_t tsr_abi(int64_t* out, int64_t capacity);  /* copies its ABI words, returns their count */

plus this manifest (JSON) and one contiguous, 64-byte-aligned weights blob. All pointers the
runtime passes to ``tsr_run`` are 64-byte aligned. The ABI words (:func:`abi_words`) are
everything that decides memory layout: arena and weights bytes, and per input and output its
dtype code, byte size and dims. The runtime refuses a manifest whose words differ from the
library's before it calls anything else in the library.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import TesseraError

__all__ = [
    "FORMAT_VERSION",
    "ArtifactError",
    "ExecutionError",
    "TensorSpec",
    "WeightSpec",
    "TargetInfo",
    "MemoryStats",
    "CompileInfo",
    "Manifest",
    "host_arch",
    "host_cpu_features",
    "check_host_compatible",
    "ABI_MAGIC",
    "ABI_VERSION",
    "DTYPE_CODES",
    "abi_words",
    "render_abi_c",
]

FORMAT_VERSION = "tessera-artifact/2"
LEGACY_FORMATS = ("tessera-artifact/1",)
ABI_MAGIC = 0x54534142  # "TSAB"
ABI_VERSION = 1
MAX_SIZE = (1 << 63) - 1  # sizes and dims travel as int64 in the ABI
# dtype name -> code in the library's ABI words (0: any other dtype; its byte sizes are still checked)
DTYPE_CODES = {
    "bool": 1, "int8": 2, "uint8": 3, "int16": 4, "uint16": 5, "int32": 6, "uint32": 7, "int64": 8,
    "uint64": 9, "float16": 10, "float32": 11, "float64": 12, "bfloat16": 13, "complex64": 14, "complex128": 15,
}


class ArtifactError(TesseraError):
    """A compiled artifact is missing, truncated, corrupt, inconsistent or built for another machine."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_MISSING = object()
_MISSING_STR = object()


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


class ExecutionError(TesseraError):
    """The compiled library reported a failure while running."""


def _dtype_name(dtype: Any, what: str) -> str:
    try:
        dt = np.dtype(dtype)
    except Exception as e:  # numpy raises TypeError, ValueError or SyntaxError for strings it cannot parse
        raise ArtifactError(f"{what}: unknown dtype {_short(dtype)}") from e
    plain = dt.kind in "biufc" or dt.name in DTYPE_CODES
    if not plain or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise ArtifactError(f"{what}: dtype {_short(str(dt))} is not a plain numeric dtype")
    return dt.name


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, NumPy dtype name (``"float32"``) and static shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ArtifactError(f"tensor name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "dtype", _dtype_name(self.dtype, f"tensor {self.name!r}"))
        if not isinstance(self.shape, list | tuple):
            raise ArtifactError(f"tensor {self.name!r}: shape must be a list of ints, got {type(self.shape).__name__}")
        shape = tuple(self.shape)
        if not all(_is_int(d) and 0 <= d <= MAX_SIZE for d in shape):
            raise ArtifactError(f"tensor {self.name!r}: shape must be non-negative int64 dims, got {_short(shape)}")
        object.__setattr__(self, "shape", shape)
        if self.nbytes > MAX_SIZE:
            raise ArtifactError(f"tensor {self.name!r}: {_short(shape)} {self.dtype} is larger than 2**63 bytes")

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.np_dtype.itemsize


@dataclass(frozen=True)
class WeightSpec:
    """Where one weight lies in the weights blob (for inspection; the library has its own offsets)."""

    name: str
    offset: int
    nbytes: int
    dtype: str | None = None
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not (_is_int(self.offset) and _is_int(self.nbytes)) or self.offset < 0 or self.nbytes < 0:
            raise ArtifactError(
                f"weight {self.name!r}: offset/size must be ints >= 0, got ({self.offset!r}, {self.nbytes!r})"
            )
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(self.shape))


@dataclass(frozen=True)
class TargetInfo:
    """The machine a library was built for: target name, hash of its configuration, CPU
    architecture (``platform.machine()`` spelling) and required CPU features (``/proc/cpuinfo``
    flag names such as ``"avx2"``)."""

    name: str
    hash: str
    arch: str
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))


@dataclass(frozen=True)
class MemoryStats:
    """Activation memory: planned arena size vs. the sum of all intermediate buffers."""

    peak_activation_bytes: int
    naive_activation_bytes: int


@dataclass(frozen=True)
class CompileInfo:
    """How the library was made: Tessera version, ISO timestamp, compile seconds, free-form extras."""

    tessera_version: str
    compiled_at: str
    compile_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """Everything the runtime needs to call a compiled library, JSON-serializable."""

    model_name: str
    target: TargetInfo
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    weights_nbytes: int
    arena_bytes: int
    weights: list[WeightSpec] = field(default_factory=list)
    memory: MemoryStats | None = None
    compile: CompileInfo | None = None
    library_sha256: str = ""
    weights_sha256: str = ""
    format: str = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ArtifactError` if the manifest is inconsistent."""
        _check_format(self.format, "manifest")
        if not self.outputs:
            raise ArtifactError(f"model {self.model_name!r}: manifest declares no outputs")
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ArtifactError(f"model {self.model_name!r}: duplicate {kind} names {_short(names)}")
        for key in ("weights_nbytes", "arena_bytes"):
            value = getattr(self, key)
            if not _is_int(value) or not 0 <= value <= MAX_SIZE:
                raise ArtifactError(
                    f"model {self.model_name!r}: {key} must be an int in [0, 2**63), got {_short(value)}"
                )
        for w in self.weights:
            if w.offset + w.nbytes > self.weights_nbytes:
                raise ArtifactError(
                    f"model {self.model_name!r}: weight {w.name!r} [{w.offset}, {w.offset + w.nbytes}) lies "
                    f"outside the {self.weights_nbytes}-byte weights blob"
                )

    def abi_words(self) -> list[int]:
        """The ABI words the library of this manifest must export (see :func:`abi_words`)."""
        return abi_words(self.inputs, self.outputs, self.weights_nbytes, self.arena_bytes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"format": d.pop("format"), **d}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Any, source: str = "manifest") -> Manifest:
        """Build and validate a manifest; any missing, unexpected or malformed field raises
        :class:`ArtifactError` naming it."""
        if not isinstance(d, dict):
            raise ArtifactError(f"{source}: expected a JSON object, got {type(d).__name__}")
        _check_format(d.get("format"), source)
        r = _Reader(source)
        r.keys(d, "", _MANIFEST_KEYS, {"model_name", "target", "inputs", "outputs", "weights_nbytes", "arena_bytes"})
        t = r.obj(d, "target")
        r.keys(t, "target", {"name", "hash", "arch", "features"}, {"name", "hash", "arch"})
        try:
            return cls(
                model_name=r.text(d, "model_name"),
                target=TargetInfo(r.text(t, "name", "target"), r.text(t, "hash", "target"), r.text(t, "arch", "target"),
                                  tuple(r.strs(t, "features", "target"))),
                inputs=r.tensors(d, "inputs"),
                outputs=r.tensors(d, "outputs"),
                weights_nbytes=r.size(d, "weights_nbytes"),
                arena_bytes=r.size(d, "arena_bytes"),
                weights=r.weight_specs(d),
                memory=r.memory(d),
                compile=r.compile_info(d),
                library_sha256=r.text(d, "library_sha256", default=""),
                weights_sha256=r.text(d, "weights_sha256", default=""),
                format=d["format"],
            )
        except ArtifactError as e:
            if str(e).startswith(source):
                raise
            raise ArtifactError(f"{source}: {e}") from e

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "manifest") -> Manifest:
        try:
            d = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKey as e:
            raise ArtifactError(f"{source}: duplicate key {e.args[0]!r}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{source}: not valid JSON ({e})") from e
        except RecursionError:
            raise ArtifactError(f"{source}: not a manifest (JSON nested too deeply)") from None
        except ValueError as e:  # e.g. an integer longer than Python's digit limit
            raise ArtifactError(f"{source}: not valid JSON ({e})") from e
        return cls.from_dict(d, source)


_MANIFEST_KEYS = {"format", "model_name", "target", "inputs", "outputs", "weights_nbytes", "arena_bytes", "weights",
                  "memory", "compile", "library_sha256", "weights_sha256"}


def _check_format(fmt: Any, source: str) -> None:
    if fmt == FORMAT_VERSION:
        return
    if fmt in LEGACY_FORMATS:
        raise ArtifactError(
            f"{source}: artifact format {fmt!r} was written by an older Tessera: its library does not export "
            f"its ABI and no digest covers its manifest, so this runtime (format {FORMAT_VERSION!r}) does not load "
            "it; recompile the model with `tessera compile`"
        )
    raise ArtifactError(f"{source}: unsupported artifact format {_short(fmt)} (this runtime reads {FORMAT_VERSION!r})")


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise _DuplicateKey(k)
        d[k] = v
    return d


class _Reader:
    """Typed access to the fields of a parsed manifest; each failure names the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, key: str, want: str, got: Any = None, missing: bool = False) -> ArtifactError:
        name = f"{where}.{key}" if where else key
        if missing:
            return ArtifactError(f"{self.source}: missing field {name!r}")
        return ArtifactError(f"{self.source}: field {name!r} must be {want}, got {_short(got)}")

    def keys(self, d: dict[str, Any], where: str, allowed: set[str], required: set[str]) -> None:
        for k in sorted(required - d.keys()):
            raise self.fail(where, k, "", missing=True)
        extra = sorted(str(k) for k in d.keys() - allowed)
        if extra:
            raise ArtifactError(f"{self.source}: unexpected field(s) {_short(extra)} in {where or 'the manifest'}")

    def get(self, d: dict[str, Any], key: str, where: str, default: Any) -> Any:
        if key in d:
            return d[key]
        if default is _MISSING:
            raise self.fail(where, key, "", missing=True)
        return default

    def obj(self, d: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
        v = self.get(d, key, where, _MISSING)
        if not isinstance(v, dict):
            raise self.fail(where, key, "an object", v)
        return v

    def text(self, d: dict[str, Any], key: str, where: str = "", default: Any = _MISSING_STR) -> str:
        v = self.get(d, key, where, _MISSING if default is _MISSING_STR else default)
        if not isinstance(v, str):
            raise self.fail(where, key, "a string", v)
        return v

    def size(self, d: dict[str, Any], key: str, where: str = "") -> int:
        v = self.get(d, key, where, _MISSING)
        if not _is_int(v) or not 0 <= v <= MAX_SIZE:
            raise self.fail(where, key, "an int in [0, 2**63)", v)
        return v

    def items(self, d: dict[str, Any], key: str, where: str = "", default: Any = _MISSING) -> list[Any]:
        v = self.get(d, key, where, default)
        if not isinstance(v, list | tuple):  # tuples: a dict from Manifest.to_dict, not from JSON
            raise self.fail(where, key, "a list", v)
        return list(v)

    def strs(self, d: dict[str, Any], key: str, where: str) -> list[str]:
        v = self.items(d, key, where, [])
        if not all(isinstance(x, str) for x in v):
            raise self.fail(where, key, "a list of strings", v)
        return v

    def dims(self, d: dict[str, Any], key: str, where: str, default: Any = _MISSING) -> tuple[int, ...]:
        v = self.items(d, key, where, default)
        if not all(_is_int(x) and 0 <= x <= MAX_SIZE for x in v):
            raise self.fail(where, key, "a list of int64 dims >= 0", v)
        return tuple(v)

    def tensors(self, d: dict[str, Any], key: str) -> list[TensorSpec]:
        out = []
        for i, t in enumerate(self.items(d, key)):
            where = f"{key}[{i}]"
            if not isinstance(t, dict):
                raise ArtifactError(f"{self.source}: field {where!r} must be an object, got {_short(t)}")
            self.keys(t, where, {"name", "dtype", "shape"}, {"name", "dtype", "shape"})
            name, dtype = self.text(t, "name", where), self.text(t, "dtype", where)
            out.append(TensorSpec(name, dtype, self.dims(t, "shape", where)))
        return out

    def weight_specs(self, d: dict[str, Any]) -> list[WeightSpec]:
        out = []
        for i, w in enumerate(self.items(d, "weights", "", [])):
            where = f"weights[{i}]"
            if not isinstance(w, dict):
                raise ArtifactError(f"{self.source}: field {where!r} must be an object, got {_short(w)}")
            self.keys(w, where, {"name", "offset", "nbytes", "dtype", "shape"}, {"name", "offset", "nbytes"})
            dtype = w.get("dtype")
            if dtype is not None and not isinstance(dtype, str):
                raise self.fail(where, "dtype", "a string or null", dtype)
            shape = self.dims(w, "shape", where) if w.get("shape") is not None else None
            out.append(WeightSpec(self.text(w, "name", where), self.size(w, "offset", where),
                                  self.size(w, "nbytes", where), dtype, shape))
        return out

    def memory(self, d: dict[str, Any]) -> MemoryStats | None:
        if d.get("memory") is None:
            return None
        m = self.obj(d, "memory")
        keys = {"peak_activation_bytes", "naive_activation_bytes"}
        self.keys(m, "memory", keys, keys)
        return MemoryStats(self.size(m, "peak_activation_bytes", "memory"),
                           self.size(m, "naive_activation_bytes", "memory"))

    def compile_info(self, d: dict[str, Any]) -> CompileInfo | None:
        if d.get("compile") is None:
            return None
        c = self.obj(d, "compile")
        self.keys(c, "compile", {"tessera_version", "compiled_at", "compile_seconds", "extra"},
                  {"tessera_version", "compiled_at"})
        seconds = c.get("compile_seconds", 0.0)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds):
            raise self.fail("compile", "compile_seconds", "a finite number", seconds)
        extra = c.get("extra", {})
        if not isinstance(extra, dict):
            raise self.fail("compile", "extra", "an object", extra)
        return CompileInfo(self.text(c, "tessera_version", "compile"), self.text(c, "compiled_at", "compile"),
                           float(seconds), extra)


def abi_words(inputs: list[TensorSpec], outputs: list[TensorSpec], weights_nbytes: int, arena_bytes: int) -> list[int]:
    """What decides the memory layout of ``tsr_run``'s arguments, as int64 words: magic, ABI version,
    arena bytes, weights bytes, input count, output count, then per input and output its dtype code,
    byte size, rank and dims. The compiler bakes these into the library (:func:`render_abi_c`)."""
    words = [ABI_MAGIC, ABI_VERSION, arena_bytes, weights_nbytes, len(inputs), len(outputs)]
    for spec in (*inputs, *outputs):
        words += [DTYPE_CODES.get(spec.dtype, 0), spec.nbytes, len(spec.shape), *spec.shape]
    return words


def render_abi_c(words: list[int]) -> str:
    """C definition of ``tsr_abi`` exporting ``words`` (see :func:`abi_words`)."""
    body = ", ".join(f"{int(w)}LL" for w in words)
    return "\n".join([
        "/* the layout of tsr_run's arguments: the runtime compares it with the manifest before any other call */",
        f"static const long long tsr_abi_words[{len(words)}] = {{{body}}};",
        "long long tsr_abi(long long* out, long long capacity) {",
        f"  for (long long i = 0; i < {len(words)} && i < capacity; ++i) out[i] = tsr_abi_words[i];",
        f"  return {len(words)};",
        "}",
    ])


_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


def host_arch() -> str:
    """This machine's CPU architecture, normalised (``x86_64``, ``aarch64``, ...)."""
    m = platform.machine().lower()
    return _ARCH_ALIASES.get(m, m)


def host_cpu_features() -> set[str] | None:
    """CPU feature flags from ``/proc/cpuinfo`` (``None`` where that is not available)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def check_host_compatible(manifest: Manifest, source: str) -> None:
    """Raise :class:`ArtifactError` if the library was built for another architecture or needs CPU
    features this machine lacks."""
    want = _ARCH_ALIASES.get(manifest.target.arch.lower(), manifest.target.arch.lower())
    have = host_arch()
    if want != have:
        raise ArtifactError(
            f"{source}: model {manifest.model_name!r} was compiled for {want} (target {manifest.target.name!r}) "
            f"but this machine is {have}; recompile it for this machine"
        )
    if manifest.target.features:
        flags = host_cpu_features()
        missing = sorted(set(manifest.target.features) - flags) if flags is not None else []
        if missing:
            raise ArtifactError(
                f"{source}: model {manifest.model_name!r} (target {manifest.target.name!r}) needs CPU features "
                f"{', '.join(missing)} that this machine lacks; recompile it for this machine"
            )
