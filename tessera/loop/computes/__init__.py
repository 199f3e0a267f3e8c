"""Importing this package registers every operator's compute definition."""

from tessera.loop.computes import (  # noqa: F401
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
