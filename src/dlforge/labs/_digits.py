"""`builtin:digits` as arrays for the maths labs: the 1797 8x8 images flattened to 64 features in [0, 1], and
the stratified split every dlforge task uses (`dlforge.data.split.stratified_split`), so a lab's test set is the
one a `task: image_classification` spec with the same `data.split` would hold out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Digits:
    x_train: np.ndarray  # (N, 64) float64 in [0, 1]
    y_train: np.ndarray  # (N,) int64, classes 0-9
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(val: float = 0.1, test: float = 0.2, seed: int = 0) -> Digits:
    """The digits, split (train, val, test) as `data.split: {val, test, seed}` splits them."""
    import dlforge.data.images  # noqa: F401  (registers builtin:digits)
    from dlforge.data.split import stratified_split
    from dlforge.registry import DATASETS

    images = DATASETS.get("digits")()
    x = np.asarray(images.images, dtype=np.float64).reshape(len(images.targets), -1) / 255.0  # (1797, 64)
    y = np.asarray(images.targets, dtype=np.int64)
    train, val_idx, test_idx = stratified_split(y, val, test, seed)
    return Digits(x[train], y[train], x[val_idx], y[val_idx], x[test_idx], y[test_idx])
