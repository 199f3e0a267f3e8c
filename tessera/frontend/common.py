"""Helpers shared by the model frontends (ONNX, PyTorch)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from tessera.errors import UnsupportedOp, UnsupportedOperatorError


def unsupported_error(found: Iterable[tuple[str, str]], source: str) -> UnsupportedOperatorError:
    """Build one error listing every unsupported op from ``(op_type, node_name)`` pairs.

    Op types keep first-seen order; node names keep model order within each op type."""
    by_op: dict[str, list[str]] = {}
    for op_type, node_name in found:
        by_op.setdefault(op_type, []).append(node_name)
    return UnsupportedOperatorError(
        [UnsupportedOp(op, tuple(names), source) for op, names in by_op.items()]
    )


def symbol_name(text: str, fallback: str = "d") -> str:
    """Turn an arbitrary dimension/value label into a valid symbol (identifier) name."""
    name = re.sub(r"\W", "_", text.strip()).strip("_") or fallback
    return name if name[0].isalpha() or name[0] == "_" else f"{fallback}_{name}"
