"""Per-task search: evolutionary search over knob points guided by the cost model, with
epsilon-greedy exploration. Deterministic for a seed (given the same measurements)."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from tessera.schedule.primitives import Step
from tessera.tune.features import kernel_features
from tessera.tune.space import Config, TaskSpace
from tessera.tune.tasks import TuneTask
from tessera.tune.workload import describe, rename_steps

log = logging.getLogger("tessera.tune")
POPULATION = 48
GENERATIONS = 3
ELITE = 8


@dataclass
class Candidate:
    """A point of the space with its schedules (instance names) and canonical step trace."""

    config: Config
    schedules: dict[str, list[Step]]
    steps: list[list[Step]]  # canonical loop names, per stage
    key: str  # canonical trace text: equal traces are the same candidate
    features: list[float] = field(default_factory=list)


@dataclass
class Measured:
    """One measurement of a candidate, as the search remembers it."""

    config: Config
    seconds: float | None
    status: str
    features: list[float]


class TaskSearch:
    """Search state of one task: what was measured, the best so far, and how to propose more."""

    def __init__(self, task: TuneTask, target: Any, seed: int) -> None:
        self.task = task
        self.target = target
        self.space = TaskSpace(task.gc, target)
        self.rng = random.Random(f"{seed}:{task.key}")
        self._names = describe(task.gc)[1]
        self._by_config: dict[str, Candidate] = {}  # points already turned into schedules
        self.measured: dict[str, Measured] = {}
        self.default_seconds: float | None = None
        self.best_seconds: float | None = None
        self.best_config: Config | None = None
        self.history: list[float] = []  # best seconds after each search round
        self.rounds = 0
        self.exhausted = False

    # ---- candidates ----------------------------------------------------------------------------
    def candidate(self, config: Config) -> Candidate:
        """The candidate of a point (raises ValueError for a point outside the space)."""
        config = self.space.complete(config)
        ck = json.dumps(config, sort_keys=True)
        hit = self._by_config.get(ck)
        if hit is not None:
            return hit
        scheds = self.space.schedules(config)
        steps = [rename_steps(scheds[st.name], self._names) for st in self.task.gc.stages]
        key = json.dumps([[s.to_json() for s in stage] for stage in steps], separators=(",", ":"))
        self._by_config[ck] = c = Candidate(config, scheds, steps, key)
        return c

    def default_candidate(self) -> Candidate:
        return self.candidate(self.space.default())

    def features(self, c: Candidate) -> list[float]:
        if not c.features:
            c.features = kernel_features(self.task.gc, c.schedules, c.config, self.target)
        return c.features

    def record(self, c: Candidate, seconds: float | None, status: str) -> None:
        self.measured[c.key] = Measured(c.config, seconds, status, self.features(c))
        if status == "ok" and seconds is not None and (self.best_seconds is None or seconds < self.best_seconds):
            self.best_seconds, self.best_config = seconds, c.config

    # ---- proposing -----------------------------------------------------------------------------
    def propose(self, model: Any, n: int, epsilon: float) -> list[Candidate]:
        """Up to ``n`` unmeasured candidates: the model's best from an evolved population, and a
        share ``epsilon`` of random ones. Sets ``exhausted`` when nothing new is found."""
        pool: dict[str, Candidate] = {}

        def add(config: Config) -> None:
            try:
                c = self.candidate(config)
            except ValueError as e:  # a stored point the current knob space no longer has
                log.debug("skipping point %s: %s", config, e)
                return
            if c.key not in self.measured and c.key not in pool:
                pool[c.key] = c

        ok = sorted((m for m in self.measured.values() if m.status == "ok" and m.seconds is not None),
                    key=lambda m: m.seconds)  # type: ignore[arg-type, return-value]
        parents: list[Config] = [m.config for m in ok[:ELITE]]
        for _ in range(POPULATION):
            parents.append(self.space.random(self.rng))
        for _ in range(GENERATIONS):
            children = []
            for _ in range(POPULATION):
                a = parents[self.rng.randrange(len(parents))]
                if self.rng.random() < 0.3:
                    b = parents[self.rng.randrange(len(parents))]
                    children.append(self.space.mutate(self.space.crossover(a, b, self.rng), self.rng))
                else:
                    children.append(self.space.mutate(a, self.rng))
            for cfg in parents + children:
                add(cfg)
            ranked = self._rank(list(pool.values()), model)
            parents = [c.config for c in ranked[:POPULATION]] + [m.config for m in ok[:ELITE]]
        ranked = self._rank(list(pool.values()), model)
        if not ranked:
            self.exhausted = True
            return []
        n_explore = int(round(n * epsilon)) if len(ranked) > n else 0
        chosen = ranked[:n - n_explore]
        rest = ranked[n - n_explore:]
        for _ in range(n_explore):
            if not rest:
                break
            chosen.append(rest.pop(self.rng.randrange(len(rest))))
        return chosen

    def _rank(self, cands: list[Candidate], model: Any) -> list[Candidate]:
        if not cands:
            return []
        scores = model.predict([self.features(c) for c in cands])
        tie = [self.rng.random() for _ in cands]  # an untrained model scores all alike: random order
        order = sorted(range(len(cands)), key=lambda k: (-float(scores[k]), tie[k]))
        return [cands[k] for k in order]
