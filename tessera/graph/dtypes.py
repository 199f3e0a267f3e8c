"""Element types of tensors and their NumPy equivalents."""

from __future__ import annotations

from enum import Enum

import ml_dtypes
import numpy as np


class DType(Enum):
    """Element type of a tensor. The value is the short name used in the text form."""

    float64 = "f64"
    float32 = "f32"
    float16 = "f16"
    bfloat16 = "bf16"
    int8 = "i8"
    int16 = "i16"
    int32 = "i32"
    int64 = "i64"
    uint8 = "u8"
    uint16 = "u16"
    uint32 = "u32"
    uint64 = "u64"
    bool = "bool"

    @property
    def np(self) -> np.dtype:
        """The NumPy dtype that stores this element type."""
        return _TO_NP[self]

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.float64, DType.float32, DType.float16, DType.bfloat16)

    @property
    def is_int(self) -> bool:
        return not self.is_float and self is not DType.bool

    @staticmethod
    def from_np(dtype: np.dtype | type) -> DType:
        """Map a NumPy dtype to a DType; raises GraphError for unsupported types."""
        dt = np.dtype(dtype)
        try:
            return _FROM_NP[dt]
        except KeyError:
            from tessera.errors import GraphError

            raise GraphError(f"unsupported element type {dt}") from None

    @staticmethod
    def parse(text: str) -> DType:
        """Parse a short name (``f32``) or a long name (``float32``)."""
        for d in DType:
            if text in (d.value, d.name):
                return d
        from tessera.errors import GraphError

        raise GraphError(f"unknown dtype {text!r}")

    def __str__(self) -> str:
        return self.value


_TO_NP: dict[DType, np.dtype] = {
    DType.float64: np.dtype(np.float64),
    DType.float32: np.dtype(np.float32),
    DType.float16: np.dtype(np.float16),
    DType.bfloat16: np.dtype(ml_dtypes.bfloat16),
    DType.int8: np.dtype(np.int8),
    DType.int16: np.dtype(np.int16),
    DType.int32: np.dtype(np.int32),
    DType.int64: np.dtype(np.int64),
    DType.uint8: np.dtype(np.uint8),
    DType.uint16: np.dtype(np.uint16),
    DType.uint32: np.dtype(np.uint32),
    DType.uint64: np.dtype(np.uint64),
    DType.bool: np.dtype(np.bool_),
}
_FROM_NP = {v: k for k, v in _TO_NP.items()}
