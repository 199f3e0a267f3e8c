"""Element types of the NPU family and their exact conversions (NumPy only).

Memories hold raw bytes; ``bf16`` is stored as the upper 16 bits of an IEEE f32. Conversions follow what
the hardware does: round-to-nearest-even into bf16 and into integers, saturation into integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NpuDtype:
    """One element type: its name, size in bytes, NumPy storage type and whether it is floating point."""

    name: str
    size: int
    storage: np.dtype
    is_float: bool


DTYPES: dict[str, NpuDtype] = {
    "i8": NpuDtype("i8", 1, np.dtype(np.int8), False),
    "i32": NpuDtype("i32", 4, np.dtype(np.int32), False),
    "bf16": NpuDtype("bf16", 2, np.dtype(np.uint16), True),
    "f32": NpuDtype("f32", 4, np.dtype(np.float32), True),
}


def dtype_size(name: str) -> int:
    """Bytes per element of ``name``."""
    return DTYPES[name].size


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round f32 values to bf16 (nearest, ties to even; NaN stays NaN) and return the 16-bit patterns."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    out = (rounded >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen bf16 bit patterns to f32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to the nearest bf16 value, returned as f32."""
    return bf16_bits_to_f32(f32_to_bf16_bits(x))


def to_values(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Stored elements (storage type) as computable values: ints stay ints, bf16 widens to f32."""
    return bf16_bits_to_f32(raw) if dtype == "bf16" else raw


def from_values(values: np.ndarray, dtype: str) -> np.ndarray:
    """Convert computed values to the storage type of ``dtype`` the way the hardware casts.

    Floats into integers round half to even and saturate; f32/f64 into bf16 round to nearest even."""
    info = DTYPES[dtype]
    values = np.asarray(values)
    if dtype == "bf16":
        return f32_to_bf16_bits(values.astype(np.float32))
    if dtype == "f32":
        return values.astype(np.float32)
    lo, hi = np.iinfo(info.storage).min, np.iinfo(info.storage).max
    if values.dtype.kind == "f":
        values = np.rint(np.nan_to_num(values.astype(np.float64), nan=0.0))
    return np.clip(values, lo, hi).astype(info.storage)


def encode(array: np.ndarray, dtype: str) -> np.ndarray:
    """Bytes (uint8, C order) of ``array`` converted to ``dtype`` (see :func:`from_values`)."""
    return np.ascontiguousarray(from_values(np.asarray(array), dtype)).reshape(-1).view(np.uint8)


def decode(buffer: np.ndarray, addr: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Values of a dense ``shape`` array of ``dtype`` at byte ``addr`` of ``buffer`` (bf16 widens to f32)."""
    info = DTYPES[dtype]
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.asarray(buffer, dtype=np.uint8)[addr:addr + n * info.size].view(info.storage).reshape(shape)
    return to_values(raw, dtype).copy()
