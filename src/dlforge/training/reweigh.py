"""Kamiran-Calders reweighing (Kamiran & Calders 2012, "Data preprocessing techniques for classification without
discrimination"): each training example of group g and label y weighs

    w(g, y) = P(g) P(y) / P(g, y)

on the training split, so that under the weights group and label are independent: every (g, y) cell weighs what it
would if the label did not depend on the group. With several columns, g is their combination. The Trainer draws
examples in proportion to the weights (`dlforge.training.trainer.WeightedSampler`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from dlforge.data.groups import sensitive_groups
from dlforge.errors import DlforgeError

log = logging.getLogger("dlforge")


def kamiran_calders(groups: pd.DataFrame, targets: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """(weights (N,), one row per (group, label) cell: the group columns, `label`, `count`, `weight`) for group names
    per column and class indices per row."""
    columns = list(groups.columns)
    frame = groups.astype(str).assign(label=np.asarray(targets))

    def size(by: list[str]) -> np.ndarray:  # per row: how many rows share its values of `by`
        return frame.groupby(by, sort=False)["label"].transform("size").to_numpy()

    weights = size(columns) * size(["label"]) / (len(frame) * size([*columns, "label"]))
    cells = (frame.assign(weight=weights).groupby([*columns, "label"], sort=True)
             .agg(count=("weight", "size"), weight=("weight", "first")).reset_index())
    return weights.astype(np.float64), cells


def reweigh(prepared: Any, columns: list[str], classes: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Sample weights for `prepared.train` and their summary for meta["fairness"] (the model card reads it)."""
    if prepared.train_columns is None:
        raise DlforgeError("train.fairness.reweigh: this task's training data carries no columns besides the model's "
                           "input to reweigh by (tabular rows and text tables with extra columns do)")
    frame, targets = prepared.train_columns
    groups = pd.DataFrame(sensitive_groups(frame, columns, "train.fairness.reweigh"))
    if len(groups) != len(prepared.train):
        raise DlforgeError(f"train.fairness.reweigh: {len(groups)} rows of groups for {len(prepared.train)} training "
                           "examples")
    weights, cells = kamiran_calders(groups, targets)
    effective = float(weights.sum() ** 2 / (weights ** 2).sum())
    summary = {"columns": columns, "min": float(weights.min()), "max": float(weights.max()),
               "effective_size": round(effective, 1), "rows": len(weights),
               "cells": [{"group": {c: str(row[c]) for c in columns}, "label": classes[int(row["label"])],
                          "count": int(row["count"]), "weight": round(float(row["weight"]), 6)}
                         for row in cells.to_dict("records")]}
    log.info("reweighing by %s and the label: weights %.3f to %.3f (effective sample size %.0f of %d)",
             ", ".join(columns), summary["min"], summary["max"], effective, len(weights))
    return weights, {"reweigh": summary}
