"""Operators: linalg."""

from __future__ import annotations
