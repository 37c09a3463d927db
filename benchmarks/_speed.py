"""CPU inference speed through the Predictor, as the benchmarks report it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import dlforge
from dlforge.predictor import Predictor


def images_per_second(predictor: Predictor, items: Sequence[Any], batch_size: int = 16, repeats: int = 3) -> float:
    """Items per second of `predictor.predict` (preprocessing and postprocessing included), best of `repeats`."""
    predictor.batch_size = batch_size
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(items)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def size_and_speed(run: dlforge.Run) -> tuple[float, float]:
    """(parameters in millions, test-split items per second) of a finished run's model."""
    predictor = dlforge.load(run.path)
    items = list(predictor.task.evaluation_data(predictor.meta)[0])
    params = sum(p.numel() for p in predictor.model.parameters()) / 1e6
    return params, images_per_second(predictor, items)
