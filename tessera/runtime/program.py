"""The manifest of a compiled model: what the shared library expects and how to check it.

A compiled model is one shared library exporting::

    int tsr_run(void* const* inputs, void* const* outputs, char* weights, char* arena);  /* 0 = ok */
    void tsr_set_num_threads(int n);

plus this manifest (JSON) and one contiguous, 64-byte-aligned weights blob. All pointers the
runtime passes to ``tsr_run`` are 64-byte aligned.
"""

from __future__ import annotations

import json
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
]

FORMAT_VERSION = "tessera-artifact/1"


class ArtifactError(TesseraError):
    """A compiled artifact is missing, truncated, corrupt, inconsistent or built for another machine."""


class ExecutionError(TesseraError):
    """The compiled library reported a failure while running."""


def _dtype_name(dtype: Any, what: str) -> str:
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise ArtifactError(f"{what}: unknown dtype {dtype!r}") from e
    if dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise ArtifactError(f"{what}: dtype {dt} is not a plain numeric dtype")
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
        shape = tuple(self.shape)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ArtifactError(f"tensor {self.name!r}: shape must be non-negative ints, got {list(self.shape)}")
        object.__setattr__(self, "shape", shape)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.np_dtype.itemsize


@dataclass(frozen=True)
class WeightSpec:
    """Where one weight lies in the weights blob (for inspection; the library has its own offsets)."""

    name: str
    offset: int
    nbytes: int
    dtype: str | None = None
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.offset < 0 or self.nbytes < 0:
            raise ArtifactError(f"weight {self.name!r}: negative offset/size ({self.offset}, {self.nbytes})")
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
        if self.format != FORMAT_VERSION:
            raise ArtifactError(f"unsupported artifact format {self.format!r} (this runtime reads {FORMAT_VERSION!r})")
        if not self.outputs:
            raise ArtifactError(f"model {self.model_name!r}: manifest declares no outputs")
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ArtifactError(f"model {self.model_name!r}: duplicate {kind} names {names}")
        if self.weights_nbytes < 0 or self.arena_bytes < 0:
            raise ArtifactError(f"model {self.model_name!r}: negative weights_nbytes or arena_bytes")
        for w in self.weights:
            if w.offset + w.nbytes > self.weights_nbytes:
                raise ArtifactError(
                    f"model {self.model_name!r}: weight {w.name!r} [{w.offset}, {w.offset + w.nbytes}) lies "
                    f"outside the {self.weights_nbytes}-byte weights blob"
                )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"format": d.pop("format"), **d}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Any, source: str = "manifest") -> Manifest:
        """Build and validate a manifest; any missing or malformed field raises :class:`ArtifactError`."""
        if not isinstance(d, dict):
            raise ArtifactError(f"{source}: expected a JSON object, got {type(d).__name__}")
        fmt = d.get("format")
        if fmt != FORMAT_VERSION:
            raise ArtifactError(
                f"{source}: unsupported artifact format {fmt!r} (this runtime reads {FORMAT_VERSION!r})"
            )
        try:
            return cls(
                model_name=str(d["model_name"]),
                target=TargetInfo(**d["target"]),
                inputs=[TensorSpec(**t) for t in d["inputs"]],
                outputs=[TensorSpec(**t) for t in d["outputs"]],
                weights_nbytes=int(d["weights_nbytes"]),
                arena_bytes=int(d["arena_bytes"]),
                weights=[WeightSpec(**w) for w in d.get("weights", [])],
                memory=MemoryStats(**d["memory"]) if d.get("memory") else None,
                compile=CompileInfo(**d["compile"]) if d.get("compile") else None,
                library_sha256=str(d.get("library_sha256", "")),
                weights_sha256=str(d.get("weights_sha256", "")),
                format=fmt,
            )
        except ArtifactError as e:
            raise ArtifactError(f"{source}: {e}") from e
        except KeyError as e:
            raise ArtifactError(f"{source}: missing field {e.args[0]!r}") from e
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"{source}: malformed field ({e})") from e

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "manifest") -> Manifest:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{source}: not valid JSON ({e})") from e
        return cls.from_dict(d, source)


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
