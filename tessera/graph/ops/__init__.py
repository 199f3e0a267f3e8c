"""Importing this package registers every operator (one module per family)."""

from tessera.graph.ops import (  # noqa: F401
    activation,
    elementwise,
    indexing,
    linalg,
    nn,
    normalization,
    pooling,
    quantize,
    reduce,
    shape,
)
