"""Importing this package registers every operator's compute definition."""

from tessera.loop.computes import elementwise, linalg  # noqa: F401
