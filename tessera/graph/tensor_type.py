"""Tensor types: element dtype plus a shape whose dims may be symbolic."""

from __future__ import annotations

from dataclasses import dataclass

from tessera.graph.dtypes import DType
from tessera.graph.symbolic import Dim, Sym, evaluate, parse_dim


@dataclass(frozen=True)
class TensorType:
    """The type of a value in the graph IR."""

    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        for d in self.shape:
            if not isinstance(d, (int, Sym)) or isinstance(d, bool):
                raise TypeError(f"bad dim {d!r} in shape {self.shape!r}")
            if isinstance(d, int) and d < 0:
                raise ValueError(f"negative dim in shape {self.shape!r}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> Dim:
        n: Dim = 1
        for d in self.shape:
            n = n * d
        return n

    @property
    def symbols(self) -> set[str]:
        out: set[str] = set()
        for d in self.shape:
            if isinstance(d, Sym):
                out |= d.symbols
        return out

    def concrete(self, env: dict[str, int]) -> tuple[int, ...]:
        return tuple(evaluate(d, env) for d in self.shape)

    def with_shape(self, shape: tuple[Dim, ...]) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"

    @staticmethod
    def parse(text: str) -> TensorType:
        """Parse the printed form, e.g. ``f32[batch,seq*2,768]``."""
        dt, _, rest = text.strip().partition("[")
        if not rest.endswith("]"):
            raise ValueError(f"cannot parse tensor type {text!r}")
        body = rest[:-1].strip()
        dims = _split_top(body) if body else []
        return TensorType(DType.parse(dt), tuple(parse_dim(d) for d in dims))


def _split_top(text: str) -> list[str]:
    """Split at commas outside parentheses (slices, so linear in the text)."""
    out, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        if ch == "," and depth == 0:
            out.append(text[start:k])
            start = k + 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
    out.append(text[start:])
    return out
