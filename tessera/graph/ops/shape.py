"""Operators: shape."""

from __future__ import annotations
