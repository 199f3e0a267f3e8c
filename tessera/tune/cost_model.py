"""The learned cost model: LightGBM gradient-boosted trees from kernel features to the log speed-up
over the kernel's default schedule; retrained as measurements arrive. Deterministic for a seed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MIN_SAMPLES = 8  # below this the model predicts 0 for everything (no information yet)
FAILED_SCORE = -3.0  # log speed-up recorded for failed candidates (about 20x slower than default)


class CostModel:
    """``fit`` on (features, log speed-up) pairs; ``predict`` higher = faster."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._model: object | None = None
        self._n = 0

    @staticmethod
    def target(default_seconds: float | None, seconds: float | None) -> float:
        """Training label of one measurement (failures get :data:`FAILED_SCORE`)."""
        if not seconds or not default_seconds:
            return FAILED_SCORE
        return math.log(default_seconds / seconds)

    def fit(self, x: Sequence[Sequence[float]], y: Sequence[float]) -> None:
        self._n = len(y)
        if len(y) < MIN_SAMPLES:
            self._model = None
            return
        import lightgbm

        model = lightgbm.LGBMRegressor(
            n_estimators=80, learning_rate=0.1, num_leaves=15, min_child_samples=2, subsample=1.0,
            colsample_bytree=1.0, deterministic=True, force_row_wise=True, n_jobs=1, random_state=self.seed,
            verbose=-1)
        model.fit(np.asarray(x, np.float64), np.asarray(y, np.float64))
        self._model = model

    @property
    def trained(self) -> bool:
        return self._model is not None

    def predict(self, x: Sequence[Sequence[float]]) -> np.ndarray:
        if self._model is None or not len(x):
            return np.zeros(len(x))
        return np.asarray(self._model.predict(np.asarray(x, np.float64)))  # type: ignore[attr-defined]
