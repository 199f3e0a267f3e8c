"""Importing this package registers every operator's compute definition."""

from tessera.loop.computes import elementwise, indexing, linalg, nn, pooling, shape  # noqa: F401
