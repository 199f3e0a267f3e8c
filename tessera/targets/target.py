"""CPU target descriptions: TOML data files validated into frozen :class:`CpuTarget` objects.

A new CPU is a new file in ``descriptions/`` (or any path given to :func:`load_target`).

Schema (keys marked ``?`` are optional; every other key is required; unknown keys are errors)::

    name, description         str
    arch                      "x86_64" | "aarch64"
    isa                       [str]  feature names as /proc/cpuinfo spells them (flags / Features)
    vector_bits               int    SIMD register width: a power of two >= 64
    vector_registers          int    architectural vector registers
    cores                     int    0 = detect at run time
    frequency_ghz             float  sustained all-core estimate
    fma_units                 int    vector FMA pipes per core
    gcc_vector_extensions?    bool   GCC `vector_size` extensions usable (default true)
    [lanes]                   dtype -> lanes; lanes * dtype bits must equal vector_bits (f32 required)
    [caches]                  l1d, l2 > 0, l3 >= 0 (bytes), line (bytes, power of two)
    [compiler]                cc, flags [str], cross_cc? (used when arch differs from the build machine),
                              ldflags? [str], packages? [str] (Debian packages providing the compiler),
                              runner? [str] (emulator command prefix for foreign-arch executables),
                              runner_packages? [str]
    [vector_types]?           dtype -> C vector type name
    [[intrinsics]]?           op, c_name, header?, dtype, lanes, semantics

An intrinsic whose ``op`` is a math.h function of the loop IR (exp, log, erf, tanh, sqrt, pow, ...)
is a vector version of it the C code generator may call on ``lanes`` x ``dtype`` vectors
(:mod:`tessera.codegen.c_vector`). With a ``header`` it is taken from that header (e.g.
``_mm512_sqrt_ps``); without one it is an external function the code generator declares itself,
``V c_name(V[, V])`` with V the GCC vector type, and ``compiler.ldflags`` link its library (glibc's
libmvec names such as ``_ZGVeN16v_expf``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessera.errors import TesseraError
from tessera.utils import ContentHashed

DESCRIPTIONS_DIR = Path(__file__).parent / "descriptions"
NPU_FILE_PREFIX = "npu-"  # NPU descriptions share the folder; tessera.npu.hw loads them
ARCHES = ("x86_64", "aarch64")
DTYPE_BITS = {"f64": 64, "f32": 32, "f16": 16, "bf16": 16, "i64": 64, "i32": 32, "i16": 16, "i8": 8,
              "u64": 64, "u32": 32, "u16": 16, "u8": 8}


class TargetError(TesseraError):
    """A target description is invalid, unknown, or cannot be used on this machine."""


@dataclass(frozen=True)
class Caches:
    """Data cache sizes in bytes (``l3`` may be 0: none) and the cache line size."""

    l1d: int
    l2: int
    l3: int
    line: int


@dataclass(frozen=True)
class CompilerSpec:
    """How to compile C for a target."""

    cc: str
    flags: tuple[str, ...]
    cross_cc: str = ""
    ldflags: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    runner: tuple[str, ...] = ()
    runner_packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Intrinsic:
    """One SIMD intrinsic the code generator may emit (``header`` "": declared by the code generator)."""

    op: str
    c_name: str
    header: str
    dtype: str
    lanes: int
    semantics: str


@dataclass(frozen=True)
class CpuTarget(ContentHashed):
    """A validated CPU target. ``hash`` is a stable sha256 of the canonical content (cache / tuning key)."""

    name: str
    description: str
    arch: str
    isa: tuple[str, ...]
    vector_bits: int
    vector_registers: int
    cores: int
    frequency_ghz: float
    fma_units: int
    dtype_lanes: tuple[tuple[str, int], ...]
    caches: Caches
    compiler: CompilerSpec
    vector_types: tuple[tuple[str, str], ...] = ()
    intrinsics: tuple[Intrinsic, ...] = ()
    gcc_vector_extensions: bool = True
    source: str = field(default="", compare=False)
    hash: str = field(init=False, compare=False)

    def __hash__(self) -> int:  # defined here so that @dataclass does not generate a field-wise one
        return hash(self.hash)

    def lanes(self, dtype: Any) -> int:
        """SIMD lanes for ``dtype`` (a dtype name like "f32" or an object with ``.value``)."""
        key = str(getattr(dtype, "value", dtype))
        table = dict(self.dtype_lanes)
        if key in table:
            return table[key]
        if key in DTYPE_BITS:
            return max(1, self.vector_bits // DTYPE_BITS[key])
        raise TargetError(f"target {self.name}: no vector lanes known for dtype {key!r}")

    def vector_type(self, dtype: Any) -> str | None:
        """C vector type name for ``dtype`` if the description gives one."""
        return dict(self.vector_types).get(str(getattr(dtype, "value", dtype)))

    def intrinsic(self, op: str, dtype: Any = "f32") -> Intrinsic | None:
        """The intrinsic for ``op`` on ``dtype``, or None."""
        key = str(getattr(dtype, "value", dtype))
        return next((i for i in self.intrinsics if i.op == op and i.dtype == key), None)

    @property
    def headers(self) -> tuple[str, ...]:
        """Headers needed by the intrinsics, sorted, without duplicates."""
        return tuple(sorted({i.header for i in self.intrinsics if i.header}))

    def effective_cores(self) -> int:
        """``cores``, or the CPUs this process may run on when the description says 0."""
        return self.cores or available_cpus()

    @property
    def flops_per_cycle_f32(self) -> int:
        """Peak f32 flops per cycle per core (an FMA counts 2)."""
        return 2 * self.fma_units * self.lanes("f32")

    def peak_gflops(self, threads: int | None = None) -> float:
        """Peak f32 GFLOP/s with ``threads`` cores busy (default: all cores)."""
        n = self.effective_cores() if threads is None else threads
        return n * self.frequency_ghz * self.flops_per_cycle_f32


def available_cpus() -> int:
    """Number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# --- validation -------------------------------------------------------------------------------------

class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, msg: str) -> TargetError:
        return TargetError(f"{self.source}: key {key!r}: {msg}")

    def table(self, data: Any, key: str, required: set[str], optional: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a table, got {type(data).__name__}")
        prefix = f"{key}." if key else ""
        unknown = sorted(set(data) - required - optional)
        if unknown:
            allowed = ", ".join(sorted(required | optional))
            raise self.fail(prefix + unknown[0], f"unknown key (allowed here: {allowed})")
        missing = sorted(required - set(data))
        if missing:
            raise self.fail(prefix + missing[0], "missing required field")
        return data

    def typed(self, value: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        # bool is an int subclass: reject it where a number is expected
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise self.fail(key, f"must be {what}, got {value!r}")
        return value

    def string(self, value: Any, key: str, allow_empty: bool = False) -> str:
        self.typed(value, key, str, "a string")
        if not allow_empty and not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def integer(self, value: Any, key: str, minimum: int, check: Callable[[int], bool] | None = None,
                what: str = "") -> int:
        self.typed(value, key, int, "an integer")
        if value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}")
        if check is not None and not check(value):
            raise self.fail(key, f"must be {what}, got {value}")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        self.typed(value, key, list, "a list of strings")
        return tuple(self.string(v, f"{key}[{i}]") for i, v in enumerate(value))

    def dtype(self, value: Any, key: str) -> str:
        self.string(value, key)
        if value not in DTYPE_BITS:
            raise self.fail(key, f"unknown dtype {value!r} (known: {', '.join(DTYPE_BITS)})")
        return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


_TOP_REQUIRED = {"name", "description", "arch", "isa", "vector_bits", "vector_registers", "cores",
                 "frequency_ghz", "fma_units", "lanes", "caches", "compiler"}
_TOP_OPTIONAL = {"gcc_vector_extensions", "vector_types", "intrinsics"}
_INTRINSIC_KEYS = {"op", "c_name", "dtype", "lanes", "semantics"}
_C_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]*$")


def parse_target(data: dict[str, Any], source: str) -> CpuTarget:
    """Validate a parsed TOML document; errors name ``source`` and the offending key."""
    c = _Checker(source)
    c.table(data, "", _TOP_REQUIRED, _TOP_OPTIONAL)
    arch = c.string(data["arch"], "arch")
    if arch not in ARCHES:
        raise c.fail("arch", f"must be one of {', '.join(ARCHES)}, got {arch!r}")
    vbits = c.integer(data["vector_bits"], "vector_bits", 64, _pow2, "a power of two")
    freq = c.typed(data["frequency_ghz"], "frequency_ghz", (int, float), "a number")
    if not 0 < freq < 20:
        raise c.fail("frequency_ghz", f"must be in (0, 20), got {freq}")

    lanes_t = c.table(data["lanes"], "lanes", {"f32"}, set(DTYPE_BITS))
    lanes: list[tuple[str, int]] = []
    for dt, n in lanes_t.items():
        c.integer(n, f"lanes.{dt}", 1)
        if n * DTYPE_BITS[dt] != vbits:
            raise c.fail(f"lanes.{dt}", f"{n} lanes x {DTYPE_BITS[dt]} bits != vector_bits {vbits}")
        lanes.append((dt, n))

    ct = c.table(data["caches"], "caches", {"l1d", "l2", "l3", "line"}, set())
    caches = Caches(l1d=c.integer(ct["l1d"], "caches.l1d", 1), l2=c.integer(ct["l2"], "caches.l2", 1),
                    l3=c.integer(ct["l3"], "caches.l3", 0),
                    line=c.integer(ct["line"], "caches.line", 1, _pow2, "a power of two"))
    if caches.l2 < caches.l1d:
        raise c.fail("caches.l2", f"smaller than caches.l1d ({caches.l2} < {caches.l1d})")

    cc = c.table(data["compiler"], "compiler", {"cc", "flags"},
                 {"cross_cc", "ldflags", "packages", "runner", "runner_packages"})
    compiler = CompilerSpec(
        cc=c.string(cc["cc"], "compiler.cc"), flags=c.strings(cc["flags"], "compiler.flags"),
        cross_cc=c.string(cc.get("cross_cc", ""), "compiler.cross_cc", allow_empty=True),
        **{k: c.strings(cc.get(k, []), f"compiler.{k}")
           for k in ("ldflags", "packages", "runner", "runner_packages")})

    vt = c.table(data.get("vector_types", {}), "vector_types", set(), set(DTYPE_BITS))
    vector_types = tuple((dt, c.string(v, f"vector_types.{dt}")) for dt, v in vt.items())

    intrinsics = []
    raw = c.typed(data.get("intrinsics", []), "intrinsics", list, "an array of tables")
    for i, entry in enumerate(raw):
        key = f"intrinsics[{i}]"
        c.table(entry, key, _INTRINSIC_KEYS, {"header"})
        dt = c.dtype(entry["dtype"], f"{key}.dtype")
        n = c.integer(entry["lanes"], f"{key}.lanes", 1)
        if n * DTYPE_BITS[dt] > vbits:
            raise c.fail(f"{key}.lanes", f"{n} x {dt} is wider than vector_bits {vbits}")
        c_name = c.string(entry["c_name"], f"{key}.c_name")
        if not _C_IDENT.match(c_name):
            raise c.fail(f"{key}.c_name", f"must be a C identifier, got {c_name!r}")
        header = c.string(entry.get("header", ""), f"{key}.header", allow_empty=True)
        if header and not _HEADER.match(header):
            raise c.fail(f"{key}.header", f"must be a header file name like immintrin.h, got {header!r}")
        intrinsics.append(Intrinsic(op=c.string(entry["op"], f"{key}.op"), c_name=c_name, header=header,
                                    dtype=dt, lanes=n,
                                    semantics=c.string(entry["semantics"], f"{key}.semantics")))

    return CpuTarget(
        name=c.string(data["name"], "name"), description=c.string(data["description"], "description"),
        arch=arch, isa=c.strings(data["isa"], "isa"), vector_bits=vbits,
        vector_registers=c.integer(data["vector_registers"], "vector_registers", 1),
        cores=c.integer(data["cores"], "cores", 0), frequency_ghz=float(freq),
        fma_units=c.integer(data["fma_units"], "fma_units", 1), dtype_lanes=tuple(lanes), caches=caches,
        compiler=compiler, vector_types=vector_types, intrinsics=tuple(intrinsics),
        gcc_vector_extensions=c.typed(data.get("gcc_vector_extensions", True), "gcc_vector_extensions", bool,
                                      "true or false"),
        source=source)


# --- loading ----------------------------------------------------------------------------------------

def list_targets() -> list[str]:
    """Names of the built-in CPU target descriptions (``npu-*.toml`` files are NPU descriptions: tessera.npu)."""
    return sorted(p.stem for p in DESCRIPTIONS_DIR.glob("*.toml") if not p.stem.startswith(NPU_FILE_PREFIX))


def load_target(name_or_path: str | os.PathLike[str] | CpuTarget) -> CpuTarget:
    """A built-in target by name, ``"host"`` (see :func:`~tessera.targets.host.host_target`), or a .toml path."""
    if isinstance(name_or_path, CpuTarget):
        return name_or_path
    text = os.fspath(name_or_path)
    if text == "host":
        from tessera.targets.host import host_target

        return host_target()
    path = Path(text)
    if path.suffix != ".toml" and os.sep not in text:
        path = DESCRIPTIONS_DIR / f"{text}.toml"
        if not path.is_file() or text.startswith(NPU_FILE_PREFIX):
            raise TargetError(f"unknown target {text!r}; built-in targets: {', '.join(list_targets())}, "
                              "'host', or a path to a .toml description")
    return _load_file(str(path.resolve()), path.stat().st_mtime_ns if path.is_file() else 0)


_file_cache: dict[tuple[str, int], CpuTarget] = {}


def _load_file(path: str, mtime: int) -> CpuTarget:
    hit = _file_cache.get((path, mtime))
    if hit is not None:
        return hit
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise TargetError(f"target description {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{path}: invalid TOML: {e}") from None
    target = parse_target(data, path)
    _file_cache[(path, mtime)] = target
    return target
