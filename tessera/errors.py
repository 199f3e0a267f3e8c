"""Exception types shared by every layer of Tessera.

Every error a user can trigger derives from :class:`TesseraError`, so the CLI can print one
clear line for it and exit non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class TesseraError(Exception):
    """Base class for errors caused by user input (models, files, arguments)."""


class ModelLoadError(TesseraError):
    """A model file is missing, truncated, corrupt or not a model."""


@dataclass(frozen=True)
class UnsupportedOp:
    """One unsupported operator type found in a model."""

    op_type: str
    node_names: tuple[str, ...]
    source: str

    @property
    def count(self) -> int:
        return len(self.node_names)


class UnsupportedOperatorError(TesseraError):
    """A model uses operators Tessera does not support; lists all of them at once."""

    def __init__(self, ops: list[UnsupportedOp]) -> None:
        self.ops = ops
        parts = []
        for op in ops:
            first = ", ".join(op.node_names[:3]) + (", ..." if op.count > 3 else "")
            parts.append(f"{op.op_type} x{op.count} (nodes: {first}; in {op.source})")
        total = sum(op.count for op in ops)
        super().__init__(
            f"{len(ops)} unsupported operator type(s), {total} node(s): " + "; ".join(parts)
        )


class GraphError(TesseraError):
    """A graph is malformed: failed verification, bad attribute, impossible shapes."""


class ShapeInferenceError(GraphError):
    """Types of a node's inputs do not fit the operator's rule."""


class InputError(TesseraError):
    """Inputs given to a model do not match its signature."""


class InputCountError(InputError):
    """Wrong number of inputs, or unknown/missing input names."""


class InputShapeError(InputError):
    """An input's shape does not match the declared (possibly symbolic) shape."""


class InputDtypeError(InputError):
    """An input's dtype does not match the declared dtype."""


class CompileError(TesseraError):
    """Compiling a model failed: unsupported construct, or the C compiler rejected generated code
    (the message names the generated file and the kernel)."""
