"""NPU simulator: functional NumPy execution and an event-driven cycle-approximate timing model."""

from __future__ import annotations

from tessera.npu.sim.engine import SimResult, TagStats, simulate
from tessera.npu.sim.functional import Memories

__all__ = ["Memories", "SimResult", "TagStats", "simulate"]
