"""Deterministic train/val/test splits, stratified by label where every class allows it."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("dlforge")


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
        keep, held = train_test_split(idx, test_size=frac, random_state=seed + salt, stratify=labels)
        return np.sort(keep), np.sort(held)

    rest, test_idx = cut(index, test, 0)
    train_idx, val_idx = cut(rest, val / (1.0 - test) if test < 1 else 0.0, 1)
    return train_idx, val_idx, test_idx
