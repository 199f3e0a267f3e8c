"""A task's search space: one point = one knob assignment per stage (from tessera.schedule.rules).

Points are plain JSON data (a list of ``{knob: value}`` dicts, one per stage)."""

from __future__ import annotations

import random
from typing import Any

from tessera.loop.instantiate import GroupCompute
from tessera.schedule.primitives import Step
from tessera.schedule.rules import default_knobs, knob_space, schedule_from_knobs

Config = list[dict[str, Any]]


class TaskSpace:
    """The knob space of every stage of one kernel."""

    def __init__(self, gc: GroupCompute, target: Any) -> None:
        self.gc = gc
        self.target = target
        self.constants = frozenset(gc.constants)
        self.spaces = [knob_space(st, target, self.constants) for st in gc.stages]
        # knobs with a single candidate are fixed: they are not searched
        self.free = [sorted(k for k, vs in sp.items() if len(vs) > 1) for sp in self.spaces]
        self._defaults = [dict(default_knobs(st, target, self.constants)) for st in gc.stages]

    @property
    def size(self) -> int:
        """Number of points (product of candidate counts)."""
        n = 1
        for sp in self.spaces:
            for vs in sp.values():
                n *= len(vs)
        return n

    def default(self) -> Config:
        return [dict(d) for d in self._defaults]

    def random(self, rng: random.Random) -> Config:
        return [{k: vs[rng.randrange(len(vs))] for k, vs in sorted(sp.items())} for sp in self.spaces]

    def mutate(self, config: Config, rng: random.Random) -> Config:
        """``config`` with one free knob (of one stage) set to another candidate."""
        choices = [(s, k) for s, ks in enumerate(self.free) for k in ks]
        if not choices:
            return [dict(c) for c in config]
        s, k = choices[rng.randrange(len(choices))]
        out = [dict(c) for c in config]
        values = [v for v in self.spaces[s][k] if v != out[s].get(k)]
        out[s][k] = values[rng.randrange(len(values))]
        return out

    def crossover(self, a: Config, b: Config, rng: random.Random) -> Config:
        """Each knob taken from ``a`` or ``b`` at random."""
        return [{k: (ca if rng.random() < 0.5 else cb)[k] for k in sorted(ca)}
                for ca, cb in zip(self.complete(a), self.complete(b), strict=True)]

    def complete(self, config: Config) -> Config:
        """``config`` with every knob present (missing ones, e.g. knobs newer than a stored record,
        take their default values)."""
        defaults = self.default()
        if len(config) != len(defaults):
            raise ValueError(f"point has {len(config)} stage(s), kernel has {len(defaults)}")
        return [{**d, **c} for d, c in zip(defaults, config, strict=True)]

    def schedules(self, config: Config) -> dict[str, list[Step]]:
        """Per stage name, the steps of ``config`` (raises ValueError for a point outside the space)."""
        if len(config) != len(self.gc.stages):
            raise ValueError(f"point has {len(config)} stage(s), kernel has {len(self.gc.stages)}")
        return {st.name: schedule_from_knobs(st, self.target, self.constants, knobs)
                for st, knobs in zip(self.gc.stages, config, strict=True)}
