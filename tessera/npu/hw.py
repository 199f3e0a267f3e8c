"""NPU hardware descriptions: TOML files validated into frozen :class:`NpuDescription` objects.

A new chip generation is a new file (``tessera/targets/descriptions/npu-*.toml`` or any path given to
:func:`load_description`); nothing in Tessera branches on a generation's name.

Schema (``?`` = optional table/key; every other key is required; unknown keys are errors)::

    name, description              str
    [chip]         clock_ghz (float > 0), cores (int >= 1)
    [matrix]       kind = "systolic" | "dot-product"; rows, cols (int >= 1);
                   dataflows = subset of weight-stationary, output-stationary (systolic) or
                   channel-reduction (dot-product); dtypes = [[input, accumulator], ...] pairs out of
                   ["i8","i32"], ["bf16","f32"]; fill_latency (cycles to fill + drain the array's pipeline);
                   double_buffered_weights (bool: the stationary operand of the next fold loads while the
                   current fold computes)
    [vector]?      lanes; dtypes [str]; latency? (pipeline cycles, default 2);
                   [vector.cycles] cycles per `lanes`-wide chunk for each supported op class out of
                   add mul max min shift relu exp rsqrt recip reduce cast copy (an absent op is unsupported)
    [memory.scratchpad]   bytes, banks (power of two), row_bytes, holds? [str]   per core: inputs, weights
    [memory.accumulator]  bytes, banks, row_bytes, holds?                        per core: accumulator dtype
    [memory.l2]?          bytes, banks, row_bytes, bytes_per_cycle, latency, holds?   shared by all cores
    [dram]         bytes_per_cycle (> 0), latency (cycles), burst_bytes (power of two)
    [dma]          max_rows (>= 1), padding (bool), store_ops = subset of bias scale relu relu6 clip cast
    [execution]    queues = ["inorder"] (decoupled = false) or distinct names out of load compute vector store
                   (decoupled = true); tokens (dependency tokens per core; >= 1 when decoupled)
    [energy]?      pj_per_mac, pj_per_dram_byte, pj_per_sram_byte
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessera.errors import TesseraError
from tessera.npu.dtypes import DTYPES
from tessera.utils import ContentHashed

DESCRIPTIONS_DIR = Path(__file__).resolve().parent.parent / "targets" / "descriptions"
FILE_PREFIX = "npu-"
MATRIX_KINDS = {"systolic": ("weight-stationary", "output-stationary"), "dot-product": ("channel-reduction",)}
DTYPE_PAIRS = (("i8", "i32"), ("bf16", "f32"))
VECTOR_OP_CLASSES = ("add", "mul", "max", "min", "shift", "relu", "exp", "rsqrt", "recip", "reduce", "cast",
                     "copy")
# vector instruction op -> the [vector.cycles] class that prices (and enables) it
VECTOR_OPS = {"add": "add", "sub": "add", "mul": "mul", "max": "max", "min": "min", "shift": "shift",
              "relu": "relu", "exp": "exp", "rsqrt": "rsqrt", "recip": "recip", "reduce_sum": "reduce",
              "reduce_max": "reduce", "cast": "cast", "copy": "copy"}
STORE_OPS = ("bias", "scale", "relu", "relu6", "clip", "cast")
DECOUPLED_QUEUES = ("load", "compute", "vector", "store")
INORDER_QUEUE = "inorder"


class NpuDescriptionError(TesseraError, ValueError):
    """An NPU description is invalid or unknown (the message names the file and the key)."""


@dataclass(frozen=True)
class Chip:
    clock_ghz: float
    cores: int


@dataclass(frozen=True)
class MatrixUnit:
    """The per-core matrix array: ``rows`` x ``cols`` processing elements (MACs per cycle)."""

    kind: str
    rows: int
    cols: int
    dataflows: tuple[str, ...]
    dtypes: tuple[tuple[str, str], ...]
    fill_latency: int
    double_buffered_weights: bool

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    def supports(self, dtype: str, acc_dtype: str) -> bool:
        return (dtype, acc_dtype) in self.dtypes

    def acc_dtype(self, dtype: str) -> str | None:
        """The accumulator dtype paired with input ``dtype``, or None if unsupported."""
        return next((a for d, a in self.dtypes if d == dtype), None)


@dataclass(frozen=True)
class VectorUnit:
    """The optional per-core vector unit; ``cycles`` gives cycles per ``lanes`` elements per op class."""

    lanes: int
    dtypes: tuple[str, ...]
    cycles: tuple[tuple[str, int], ...]
    latency: int = 2

    def op_cycles(self, op_class: str) -> int | None:
        return dict(self.cycles).get(op_class)

    def supports(self, op: str, dtype: str | None = None) -> bool:
        """Whether vector instruction ``op`` (e.g. "reduce_sum", "exp") runs here (on ``dtype`` if given)."""
        cls = VECTOR_OPS.get(op)
        return cls is not None and self.op_cycles(cls) is not None and (dtype is None or dtype in self.dtypes)

    @property
    def ops(self) -> tuple[str, ...]:
        """Vector instruction ops this unit supports."""
        return tuple(op for op in VECTOR_OPS if self.supports(op))


@dataclass(frozen=True)
class MemoryLevel:
    """An on-chip memory. ``bytes_per_cycle``/``latency`` only for the shared L2 (0 for per-core memories)."""

    name: str
    bytes: int
    banks: int
    row_bytes: int
    holds: tuple[str, ...]
    bytes_per_cycle: float = 0.0
    latency: int = 0


@dataclass(frozen=True)
class Dram:
    bytes_per_cycle: float
    latency: int
    burst_bytes: int


@dataclass(frozen=True)
class Dma:
    max_rows: int
    padding: bool
    store_ops: tuple[str, ...]


@dataclass(frozen=True)
class Execution:
    queues: tuple[str, ...]
    decoupled: bool
    tokens: int


@dataclass(frozen=True)
class Energy:
    pj_per_mac: float
    pj_per_dram_byte: float
    pj_per_sram_byte: float


@dataclass(frozen=True)
class NpuDescription(ContentHashed):
    """A validated NPU description. ``hash`` is a sha256 of the canonical content (cache / tuning key)."""

    name: str
    description: str
    chip: Chip
    matrix: MatrixUnit
    scratchpad: MemoryLevel
    accumulator: MemoryLevel
    dram: Dram
    dma: Dma
    execution: Execution
    vector: VectorUnit | None = None
    l2: MemoryLevel | None = None
    energy: Energy | None = None
    source: str = field(default="", compare=False)
    hash: str = field(init=False, compare=False)

    def __hash__(self) -> int:  # defined here so that @dataclass does not generate a field-wise one
        return hash(self.hash)

    @property
    def peak_macs_per_cycle(self) -> int:
        """MACs per cycle of the whole chip (all cores)."""
        return self.chip.cores * self.matrix.pes

    def memory(self, space: str) -> MemoryLevel | None:
        """The on-chip memory named by an address space (``spad``, ``acc``, ``l2``), or None."""
        return {"spad": self.scratchpad, "acc": self.accumulator, "l2": self.l2}.get(space)

    def summary(self) -> dict[str, str]:
        """Key figures for listings (``tessera targets``), as display strings."""
        m, v = self.matrix, self.vector
        peak_tops = 2 * self.peak_macs_per_cycle * self.chip.clock_ghz / 1e3
        return {
            "name": self.name, "cores": str(self.chip.cores), "GHz": f"{self.chip.clock_ghz:g}",
            "matrix": f"{m.rows}x{m.cols} {m.kind}", "dataflows": ",".join(m.dataflows),
            "dtypes": ",".join(f"{a}->{b}" for a, b in m.dtypes),
            "peak TOPS": f"{peak_tops:.2f}",
            "scratchpad": _fmt_bytes(self.scratchpad.bytes), "accumulator": _fmt_bytes(self.accumulator.bytes),
            "L2": _fmt_bytes(self.l2.bytes) if self.l2 else "-",
            "DRAM B/cycle": f"{self.dram.bytes_per_cycle:g}",
            "vector": f"{v.lanes} lanes" if v else "-",
            "queues": ",".join(self.execution.queues),
        }


def _fmt_bytes(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


# --- validation -------------------------------------------------------------------------------------

class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, msg: str) -> NpuDescriptionError:
        return NpuDescriptionError(f"{self.source}: key {key!r}: {msg}")

    def table(self, data: Any, key: str, required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:
        where = f"table [{key}]" if key else "the top level"
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a table, got {type(data).__name__}")
        prefix = f"{key}." if key else ""
        allowed = required | optional
        for k in sorted(set(data) - allowed):
            close = difflib.get_close_matches(k, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.fail(prefix + k, f"unknown key in {where}{hint} (allowed: {', '.join(sorted(allowed))})")
        missing = sorted(required - set(data))
        if missing:
            raise self.fail(prefix + missing[0], f"missing required field in {where}")
        return data

    def number(self, value: Any, key: str, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {value!r}")
        if positive and not value > 0:
            raise self.fail(key, f"must be > 0, got {value}")
        if not positive and value < 0:
            raise self.fail(key, f"must be >= 0, got {value}")
        return float(value)

    def integer(self, value: Any, key: str, minimum: int, pow2: bool = False) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}")
        if pow2 and value & (value - 1):
            raise self.fail(key, f"must be a power of two, got {value}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def choices(self, value: Any, key: str, allowed: tuple[str, ...], nonempty: bool = True) -> tuple[str, ...]:
        if not isinstance(value, list) or (nonempty and not value):
            raise self.fail(key, f"must be a {'non-empty ' if nonempty else ''}list, got {value!r}")
        for i, v in enumerate(value):
            if v not in allowed:
                close = difflib.get_close_matches(str(v), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.fail(f"{key}[{i}]", f"unknown value {v!r}{hint} (allowed: {', '.join(allowed)})")
        if len(set(value)) != len(value):
            raise self.fail(key, f"has duplicates: {value!r}")
        return tuple(value)


_MEM_KEYS = {"bytes", "banks", "row_bytes"}
_DEFAULT_HOLDS = {"scratchpad": ("inputs", "weights"), "accumulator": ("accumulators",),
                  "l2": ("inputs", "weights", "outputs")}
_HOLDS = ("inputs", "weights", "outputs", "accumulators")


def _memory(c: _Checker, data: Any, name: str, shared: bool) -> MemoryLevel:
    key = f"memory.{name}"
    extra = {"bytes_per_cycle", "latency"} if shared else set()
    t = c.table(data, key, _MEM_KEYS | extra, {"holds"})
    size = c.integer(t["bytes"], f"{key}.bytes", 1)
    banks = c.integer(t["banks"], f"{key}.banks", 1, pow2=True)
    row = c.integer(t["row_bytes"], f"{key}.row_bytes", 1, pow2=True)
    if size % (banks * row):
        raise c.fail(f"{key}.bytes", f"{size} is not a multiple of banks x row_bytes = {banks * row}")
    holds = c.choices(t.get("holds", list(_DEFAULT_HOLDS[name])), f"{key}.holds", _HOLDS)
    return MemoryLevel(name=name, bytes=size, banks=banks, row_bytes=row, holds=holds,
                       bytes_per_cycle=c.number(t["bytes_per_cycle"], f"{key}.bytes_per_cycle") if shared else 0.0,
                       latency=c.integer(t["latency"], f"{key}.latency", 0) if shared else 0)


def parse_description(data: dict[str, Any], source: str) -> NpuDescription:
    """Validate a parsed TOML document; errors name ``source`` and the offending key."""
    c = _Checker(source)
    c.table(data, "", {"name", "description", "chip", "matrix", "memory", "dram", "dma", "execution"},
            {"vector", "energy"})
    ct = c.table(data["chip"], "chip", {"clock_ghz", "cores"})
    chip = Chip(clock_ghz=c.number(ct["clock_ghz"], "chip.clock_ghz"), cores=c.integer(ct["cores"], "chip.cores", 1))

    mt = c.table(data["matrix"], "matrix", {"kind", "rows", "cols", "dataflows", "dtypes", "fill_latency",
                                            "double_buffered_weights"})
    kind = c.string(mt["kind"], "matrix.kind")
    if kind not in MATRIX_KINDS:
        raise c.fail("matrix.kind", f"must be one of {', '.join(MATRIX_KINDS)}, got {kind!r}")
    dataflows = c.choices(mt["dataflows"], "matrix.dataflows", MATRIX_KINDS[kind])
    raw_pairs = mt["dtypes"]
    if not isinstance(raw_pairs, list) or not raw_pairs:
        raise c.fail("matrix.dtypes", f"must be a non-empty list of [input, accumulator] pairs, got {raw_pairs!r}")
    pairs = []
    for i, p in enumerate(raw_pairs):
        if not (isinstance(p, list) and len(p) == 2 and tuple(p) in DTYPE_PAIRS):
            known = ", ".join(f"[{a!r}, {b!r}]" for a, b in DTYPE_PAIRS)
            raise c.fail(f"matrix.dtypes[{i}]", f"unsupported dtype pair {p!r} (supported: {known})")
        pairs.append(tuple(p))
    if len(set(pairs)) != len(pairs):
        raise c.fail("matrix.dtypes", "has duplicates")
    matrix = MatrixUnit(kind=kind, rows=c.integer(mt["rows"], "matrix.rows", 1),
                        cols=c.integer(mt["cols"], "matrix.cols", 1), dataflows=dataflows,
                        dtypes=tuple(pairs), fill_latency=c.integer(mt["fill_latency"], "matrix.fill_latency", 0),
                        double_buffered_weights=c.boolean(mt["double_buffered_weights"],
                                                          "matrix.double_buffered_weights"))

    vector = None
    if "vector" in data:
        vt = c.table(data["vector"], "vector", {"lanes", "dtypes", "cycles"}, {"latency"})
        cyc = c.table(vt["cycles"], "vector.cycles", set(), set(VECTOR_OP_CLASSES))
        if not cyc:
            raise c.fail("vector.cycles", "must give cycles for at least one op")
        vector = VectorUnit(lanes=c.integer(vt["lanes"], "vector.lanes", 1),
                            dtypes=c.choices(vt["dtypes"], "vector.dtypes", tuple(DTYPES)),
                            cycles=tuple((op, c.integer(cyc[op], f"vector.cycles.{op}", 1))
                                         for op in VECTOR_OP_CLASSES if op in cyc),
                            latency=c.integer(vt.get("latency", 2), "vector.latency", 0))

    memt = c.table(data["memory"], "memory", {"scratchpad", "accumulator"}, {"l2"})
    spad = _memory(c, memt["scratchpad"], "scratchpad", shared=False)
    acc = _memory(c, memt["accumulator"], "accumulator", shared=False)
    l2 = _memory(c, memt["l2"], "l2", shared=True) if "l2" in memt else None
    # impossible sizes: one full array tile must fit
    max_acc = max(DTYPES[a].size for _, a in matrix.dtypes)
    max_in = max(DTYPES[d].size for d, _ in matrix.dtypes)
    if acc.bytes < matrix.pes * max_acc:
        raise c.fail("memory.accumulator.bytes", f"{acc.bytes} B cannot hold one {matrix.rows}x{matrix.cols} "
                                                 f"array tile of the accumulator dtype ({matrix.pes * max_acc} B)")
    if spad.bytes < 2 * matrix.pes * max_in:
        raise c.fail("memory.scratchpad.bytes", f"{spad.bytes} B cannot hold one {matrix.rows}x{matrix.cols} "
                                                f"input tile and one weight tile ({2 * matrix.pes * max_in} B)")
    if l2 is not None and l2.bytes < spad.bytes:
        raise c.fail("memory.l2.bytes", f"shared L2 ({l2.bytes} B) smaller than one core's scratchpad "
                                        f"({spad.bytes} B)")

    dt = c.table(data["dram"], "dram", {"bytes_per_cycle", "latency", "burst_bytes"})
    dram = Dram(bytes_per_cycle=c.number(dt["bytes_per_cycle"], "dram.bytes_per_cycle"),
                latency=c.integer(dt["latency"], "dram.latency", 0),
                burst_bytes=c.integer(dt["burst_bytes"], "dram.burst_bytes", 1, pow2=True))
    dmt = c.table(data["dma"], "dma", {"max_rows", "padding", "store_ops"})
    dma = Dma(max_rows=c.integer(dmt["max_rows"], "dma.max_rows", 1),
              padding=c.boolean(dmt["padding"], "dma.padding"),
              store_ops=c.choices(dmt["store_ops"], "dma.store_ops", STORE_OPS, nonempty=False))

    et = c.table(data["execution"], "execution", {"queues", "decoupled", "tokens"})
    decoupled = c.boolean(et["decoupled"], "execution.decoupled")
    if decoupled:
        queues = c.choices(et["queues"], "execution.queues", DECOUPLED_QUEUES)
        if "compute" not in queues:
            raise c.fail("execution.queues", "a decoupled machine needs a 'compute' queue")
        if "vector" in queues and vector is None:
            raise c.fail("execution.queues", "has a 'vector' queue but the description has no [vector] unit")
    else:
        queues = c.choices(et["queues"], "execution.queues", (INORDER_QUEUE,))
    tokens = c.integer(et["tokens"], "execution.tokens", 1 if decoupled else 0)

    energy = None
    if "energy" in data:
        nt = c.table(data["energy"], "energy", {"pj_per_mac", "pj_per_dram_byte", "pj_per_sram_byte"})
        energy = Energy(**{k: c.number(nt[k], f"energy.{k}", positive=False) for k in sorted(nt)})

    return NpuDescription(name=c.string(data["name"], "name"), description=c.string(data["description"],
                                                                                   "description"),
                          chip=chip, matrix=matrix, scratchpad=spad, accumulator=acc, dram=dram, dma=dma,
                          execution=Execution(queues=queues, decoupled=decoupled, tokens=tokens),
                          vector=vector, l2=l2, energy=energy, source=source)


# --- loading ----------------------------------------------------------------------------------------

def list_descriptions() -> list[str]:
    """Names of the built-in NPU descriptions (``npu-*.toml`` in the descriptions folder)."""
    return sorted(p.stem for p in DESCRIPTIONS_DIR.glob(f"{FILE_PREFIX}*.toml"))


def is_description_name(name: str) -> bool:
    """Whether ``name`` is a built-in NPU description's name."""
    return name in list_descriptions()


_cache: dict[tuple[str, int], NpuDescription] = {}


def load_description(name_or_path: str | os.PathLike[str] | NpuDescription) -> NpuDescription:
    """A built-in description by name (``npu-gen2``) or a ``.toml`` path."""
    if isinstance(name_or_path, NpuDescription):
        return name_or_path
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.suffix != ".toml" and os.sep not in text:
        path = DESCRIPTIONS_DIR / f"{text}.toml"
        if not text.startswith(FILE_PREFIX) or not path.is_file():
            raise NpuDescriptionError(f"unknown NPU description {text!r}; built-in: "
                                      f"{', '.join(list_descriptions())}, or a path to a .toml file")
    resolved = str(path.resolve())
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise NpuDescriptionError(f"NPU description {resolved} does not exist") from None
    hit = _cache.get((resolved, mtime))
    if hit is not None:
        return hit
    try:
        with open(resolved, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise NpuDescriptionError(f"{resolved}: invalid TOML: {e}") from None
    desc = parse_description(data, resolved)
    _cache[(resolved, mtime)] = desc
    return desc
