"""The data audit: per group of a sensitive column, its size, its base rate of the positive label and its missing
values; and the proxies: how well each other column predicts the sensitive one.

A proxy's strength is the cross-validated ROC-AUC (one-vs-rest, weighted by group size, for more than two groups)
of a depth-3 decision tree that sees that one column: numbers with their missing values imputed and flagged,
categories target-encoded (sklearn's TargetEncoder, cross-fitted). 0.5 says nothing; near 1, dropping the sensitive
column from the model's inputs does not keep the model from knowing it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

MAX_PROXY_ROWS = 5000  # a random subsample beyond this: AUCs settle long before
FOLDS = 3


def group_table(groups: np.ndarray, positive: np.ndarray, frame: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """{group: {count, share, base_rate, missing: {column: share of the group's rows missing it}}}."""
    missing = frame.isna() if frame is not None else None
    out = {}
    for name in sorted(set(groups.astype(str))):
        at = groups.astype(str) == name
        row = {"count": int(at.sum()), "share": float(at.mean()), "base_rate": float(positive[at].mean())}
        if missing is not None:
            shares = missing[at].mean()
            row["missing"] = {str(c): round(float(v), 6) for c, v in shares.items() if v > 0}
        out[name] = row
    return out


def proxies(frame: pd.DataFrame, groups: np.ndarray, exclude: set[str], seed: int = 0
            ) -> tuple[list[dict[str, Any]], list[str]]:
    """([{feature, auc}] strongest first, columns skipped as free text or identifiers)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = groups.astype(str)
    keep = np.isin(y, [g for g, n in zip(*np.unique(y, return_counts=True), strict=True) if n >= FOLDS])
    rows = np.flatnonzero(keep)
    if len(rows) > MAX_PROXY_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_PROXY_ROWS, replace=False))
    y = y[rows]
    if len(set(y)) < 2:
        return [], []
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    found, skipped = [], []
    for column in frame.columns:
        if column in exclude:
            continue
        values = frame[column].iloc[rows].reset_index(drop=True)
        model, x = _model(values, seed)
        if model is None:
            skipped.append(str(column))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proba = cross_val_predict(model, x, y, cv=folds, method="predict_proba")
        found.append({"feature": str(column), "auc": round(_auc(y, proba), 4)})
    return sorted(found, key=lambda p: -p["auc"]), skipped


def _model(values: pd.Series, seed: int) -> tuple[Any, Any]:
    """(a pipeline, its input) for one column, or (None, None) for a column of free text or identifiers."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import TargetEncoder
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=3, random_state=seed)
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() == values.notna().sum() and values.notna().any():  # every value a number
        return make_pipeline(SimpleImputer(strategy="median", add_indicator=True), tree), numbers.to_frame()
    text = values.map(lambda v: "(missing)" if v is None or v != v else str(v))
    distinct = text.nunique()
    if distinct > 20 and distinct > len(text) / 2:
        return None, None
    return make_pipeline(TargetEncoder(random_state=seed), tree), text.to_frame()


def _auc(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    classes = np.unique(y)
    if len(classes) == 2:
        return float(roc_auc_score(y == classes[1], proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="weighted", labels=classes))
