"""NPU family: hardware descriptions (:mod:`.hw`), instruction set (:mod:`.isa`), text assembler
(:mod:`.asm`) and simulator (:mod:`.sim`). NumPy + stdlib only; imports nothing above tessera.errors."""

from __future__ import annotations

from tessera.npu.asm import assemble, disassemble, format_instruction
from tessera.npu.hw import (
    NpuDescription,
    NpuDescriptionError,
    list_descriptions,
    load_description,
    parse_description,
)
from tessera.npu.isa import (
    Addr,
    Barrier,
    Config,
    DmaLoad,
    DmaStore,
    Finish,
    Gemm,
    Instruction,
    NpuProgramError,
    Program,
    Signal,
    Vec,
    Wait,
    sanitize_tag,
    validate,
)

__all__ = [
    "Addr", "Barrier", "Config", "DmaLoad", "DmaStore", "Finish", "Gemm", "Instruction", "NpuDescription",
    "NpuDescriptionError", "NpuProgramError", "Program", "Signal", "Vec", "Wait", "assemble", "disassemble",
    "format_instruction", "list_descriptions", "load_description", "parse_description", "sanitize_tag",
    "validate",
]
