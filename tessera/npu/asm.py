"""Text form of NPU programs: :func:`assemble` parses it, :func:`disassemble` prints it (exact round trip:
``assemble(disassemble(p)) == p``, and disassembling assembled canonical text gives the same text).

One instruction per line, ``QUEUE OPCODE key=value ...`` (``vec`` takes its op right after the opcode:
``vector vec add dst=spad:0x0 ...``); ``#`` starts a comment; ``.core N`` starts core N's list (cores in
order; a program without ``.core`` is core 0). Values: addresses ``space:ADDR`` (decimal or 0x hex), ints,
floats, dtypes, ``accumulate=0|1``, ``pad=top,bottom,left,right``, ``act=none|relu|relu6|clip(lo,hi)``,
``scale=<float>|spad:ADDR``. Fields equal to their default are omitted when printing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera.npu.isa import (
    OPCODES,
    SPACES,
    Addr,
    Config,
    DmaLoad,
    DmaStore,
    Gemm,
    Instruction,
    NpuProgramError,
    Program,
    Signal,
    Vec,
    Wait,
)


def _addr(text: str) -> Addr:
    space, sep, rest = text.partition(":")
    if not sep or space not in SPACES:
        raise ValueError(f"expected an address space:ADDR with space in {', '.join(SPACES)}")
    return Addr(space, int(rest, 0))


def _int(text: str) -> int:
    return int(text, 0)


def _bool(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return text == "1"


def _pad(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(p, 0) for p in text.split(","))
    if len(parts) != 4:
        raise ValueError("expected top,bottom,left,right")
    return parts  # type: ignore[return-value]


def _scale(text: str) -> float | Addr:
    return _addr(text) if ":" in text else float(text)


_PARSE: dict[str, Callable[[str], Any]] = {"addr": _addr, "int": _int, "str": str, "bool": _bool, "pad": _pad,
                                           "float": float, "scale": _scale, "addr?": _addr, "float?": float}
_FORMAT: dict[str, Callable[[Any], str]] = {
    "addr": str, "addr?": str, "int": str, "str": str, "bool": lambda b: "1" if b else "0",
    "pad": lambda p: ",".join(map(str, p)), "float": repr, "float?": repr,
    "scale": lambda s: str(s) if isinstance(s, Addr) else repr(float(s))}
# text kind of every field that is not queue/tag/act/lo/hi (and vec's op, printed after the opcode)
_KINDS: dict[type, dict[str, str]] = {
    DmaLoad: {"dst": "addr", "src": "addr", "rows": "int", "cols": "int", "dtype": "str", "src_stride": "int",
              "dst_stride": "int", "pad": "pad"},
    DmaStore: {"dst": "addr", "src": "addr", "rows": "int", "cols": "int", "src_dtype": "str",
               "dst_dtype": "str", "src_stride": "int", "dst_stride": "int", "bias": "addr?", "scale": "scale"},
    Gemm: {"a": "addr", "b": "addr", "c": "addr", "m": "int", "k": "int", "n": "int", "dtype": "str",
           "acc_dtype": "str", "accumulate": "bool", "a_stride": "int", "b_stride": "int", "c_stride": "int",
           "dataflow": "str"},
    Vec: {"dst": "addr", "src0": "addr", "n": "int", "dtype": "str", "src1": "addr?", "imm": "float?",
          "rows": "int", "dst_stride": "int", "src_stride": "int", "src1_bcast": "str", "out_dtype": "str"},
    Signal: {"token": "int"}, Wait: {"token": "int"}, Config: {"key": "str", "value": "str"},
}
_DEFAULTS: dict[type, dict[str, Any]] = {
    t: {f.name: f.default for f in dataclasses.fields(t) if f.default is not dataclasses.MISSING}
    for t in OPCODES.values()}


def format_instruction(ins: Instruction) -> str:
    """One instruction as a line of text."""
    t = type(ins)
    defaults = _DEFAULTS[t]
    parts = [ins.queue, ins.OPCODE]
    if t is Vec:
        parts.append(ins.op)
    for name, kind in _KINDS.get(t, {}).items():
        value = getattr(ins, name)
        if name in defaults and value == defaults[name] and type(value) is type(defaults[name]):
            continue
        parts.append(f"{name}={_FORMAT[kind](value)}")
    if t is DmaStore and ins.act != "none":
        parts.append(f"act=clip({ins.lo!r},{ins.hi!r})" if ins.act == "clip" else f"act={ins.act}")
    if ins.tag:
        parts.append(f"tag={ins.tag}")
    return " ".join(parts)


def disassemble(program: Program) -> str:
    """The text form of ``program`` (``.core N`` headers when it has more than one core)."""
    lines: list[str] = []
    multi = len(program.cores) > 1
    for ci, core in enumerate(program.cores):
        if multi:
            lines.append(f".core {ci}")
        lines.extend(format_instruction(ins) for ins in core)
    return "\n".join(lines) + "\n"


def _parse_line(words: list[str], where: str) -> Instruction:
    if len(words) < 2:
        raise NpuProgramError(f"{where}: expected 'QUEUE OPCODE key=value ...'")
    queue, opcode = words[0], words[1]
    t = OPCODES.get(opcode)
    if t is None:
        raise NpuProgramError(f"{where}: unknown opcode {opcode!r} (known: {', '.join(OPCODES)})")
    kwargs: dict[str, Any] = {"queue": queue}
    rest = words[2:]
    if t is Vec:
        if not rest or "=" in rest[0]:
            raise NpuProgramError(f"{where}: vec needs an op name after the opcode")
        kwargs["op"], rest = rest[0], rest[1:]
    kinds = _KINDS.get(t, {})
    for word in rest:
        key, sep, value = word.partition("=")
        if not sep:
            raise NpuProgramError(f"{where}: expected key=value, got {word!r}")
        if key in kwargs:
            raise NpuProgramError(f"{where}: field {key!r} given twice")
        try:
            if key == "tag":
                kwargs["tag"] = value
            elif key == "act" and t is DmaStore:
                if value.startswith("clip(") and value.endswith(")"):
                    lo, hi = value[5:-1].split(",")
                    kwargs.update(act="clip", lo=float(lo), hi=float(hi))
                else:
                    kwargs["act"] = value
            elif key in kinds:
                kwargs[key] = _PARSE[kinds[key]](value)
            else:
                allowed = ", ".join([*kinds, "tag"] + (["act"] if t is DmaStore else []))
                raise NpuProgramError(f"{where}: unknown field {key!r} for {opcode} (fields: {allowed})")
        except (ValueError, TypeError) as e:
            raise NpuProgramError(f"{where}: bad value for {key!r}: {value!r} ({e})") from None
    required = [f.name for f in dataclasses.fields(t) if f.default is dataclasses.MISSING and f.name not in kwargs]
    if required:
        raise NpuProgramError(f"{where}: {opcode} is missing field(s) {', '.join(required)}")
    return t(**kwargs)


def assemble(text: str) -> Program:
    """Parse the text form into a :class:`Program` (syntax only; :func:`tessera.npu.isa.validate` checks it
    against a description). Errors name the line."""
    cores: list[list[Instruction]] = [[]]
    seen_core = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"line {lineno}"
        if "\0" in line:
            raise NpuProgramError(f"{where}: binary data (a NUL byte); an NPU program is text")
        words = line.split()
        if words[0] == ".core":
            try:
                idx = int(words[1]) if len(words) == 2 else -1
            except ValueError:
                idx = -1
            expected = len(cores) if seen_core or cores[0] else 0
            if idx != expected:
                raise NpuProgramError(f"{where}: expected '.core {expected}' (cores are numbered in order)")
            if seen_core or cores[0]:
                cores.append([])
            seen_core = True
            continue
        cores[-1].append(_parse_line(words, where))
    return Program(cores)


def assemble_file(path: str | os.PathLike[str]) -> Program:
    """:func:`assemble` the UTF-8 text file ``path``; every error (unreadable, binary, syntax) is an
    :class:`NpuProgramError` naming the file and, for its content, the line."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise NpuProgramError(f"cannot read NPU program {path}: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise NpuProgramError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}: {e.reason}); "
                              "an NPU program is text") from None
    try:
        return assemble(text)
    except NpuProgramError as e:
        raise NpuProgramError(f"{path}: {e}") from None
