"""Deterministic train/val/test splits, stratified by label where every class allows it, of all the data or of a
quick run's part of it (`data.limit`, `data.fraction`)."""

from __future__ import annotations

import logging
import math

import numpy as np

from dlforge.errors import DataError
from dlforge.spec import DataSpec

log = logging.getLogger("dlforge")


def split_data(targets: np.ndarray, data: DataSpec, test: float | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, val, test) of the items labelled `targets` ((N,) class indices; zeros where the task has
    no label to stratify on), as `data` says: its `limit` / `fraction` of them first, then `data.split`. `test`
    replaces split.test (0: the test set is read from elsewhere). The same data and spec always give the same."""
    s = data.split
    keep = subset(targets, data.limit, data.fraction, s.seed)
    train, val, held = stratified_split(targets[keep], s.val, s.test if test is None else test, s.seed)
    return keep[train], keep[val], keep[held]


def subset(targets: np.ndarray, limit: int | None, fraction: float | None, seed: int) -> np.ndarray:
    """Sorted indices of at most `limit` (or a `fraction`) of the items labelled `targets`: all of them when neither
    is given; a seeded draw otherwise, stratified by label where every class can keep an item on both sides."""
    from sklearn.model_selection import train_test_split  # slow to import: only when drawing

    n = len(targets)
    size = n if limit is None and fraction is None else limit if limit is not None else max(1, round(fraction * n))
    if size >= n:
        return np.arange(n)
    counts = np.bincount(targets)
    classes = int((counts > 0).sum())
    stratify = targets if counts[counts > 0].min() >= 2 and min(size, n - size) >= classes else None
    keep, _ = train_test_split(np.arange(n), train_size=size, random_state=seed + 2, stratify=stratify)
    log.info("a quick run on %d of the %d items (%s)", size, n,
             "stratified by label" if stratify is not None and classes > 1 else "drawn at random")
    return np.sort(keep)


def stratified_split(targets: np.ndarray, val: float, test: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, val, test). The same targets and seed always give the same split."""
    from sklearn.model_selection import train_test_split  # slow to import: only when splitting

    index = np.arange(len(targets))
    counts = np.bincount(targets) if len(targets) else np.array([])
    stratify = counts[counts > 0].min() >= 3 if len(counts) else False
    if not stratify:
        log.warning("a class has fewer than 3 examples: the split is random, not stratified")

    def cut(idx: np.ndarray, frac: float, salt: int) -> tuple[np.ndarray, np.ndarray]:
        if frac <= 0:
            return idx, idx[:0]
        labels = targets[idx] if stratify else None
        held = math.ceil(frac * len(idx))  # as scikit-learn rounds
        if labels is not None and min(held, len(idx) - held) < len(np.unique(labels)):
            labels = None  # too few items to put every class on both sides (a small data.limit): at random
        try:
            keep, held = train_test_split(idx, test_size=frac, random_state=seed + salt, stratify=labels)
        except ValueError as e:  # too few items for the fractions (a small data.limit)
            raise DataError(f"data.split: cannot hold out {frac:g} of {len(idx)} items ({e}); use more data "
                            "(data.limit) or smaller fractions") from None
        return np.sort(keep), np.sort(held)

    rest, test_idx = cut(index, test, 0)
    train_idx, val_idx = cut(rest, val / (1.0 - test) if test < 1 else 0.0, 1)
    return train_idx, val_idx, test_idx
