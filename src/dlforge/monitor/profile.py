"""The reference profile of a run, and the comparison of new data with it.

A profile describes a sample of reference items (up to 2000) as a table, one row per item:
- the task's input statistics (`Task.wire.statistics`: image size, brightness, contrast, sharpness;
  text length, ...);
- the model's own embeddings (the input of its head, `Predictor.embeddings`), reduced with PCA to at
  most 20 components `pc_0, pc_1, ...` (the projection is kept, so new items land in the same space);
- the prediction: the label and its confidence, for classifiers.

    <run>/profile/reference.parquet   that table
    <run>/profile/profile.json        columns, PCA projection, prediction distribution, test metrics

`compare` builds the same table for new items and tests it against the reference: each input statistic
and the predictions per column (`drift.dataset_drift`), the embeddings as a whole (MMD permutation test
and a domain classifier), and a label-free estimate of the current accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlforge._io import atomic_write, atomic_write_json
from dlforge.errors import DlforgeError
from dlforge.monitor.drift import column_drift, dataset_drift, domain_classifier_auc, mmd_test
from dlforge.predictor import Predictor

SAMPLE, COMPONENTS = 2000, 20
MMD_P, AUC_LIMIT = 0.05, 0.55  # embedding drift: MMD p-value below, domain-classifier ROC-AUC above


def _sample(items: Sequence[Any], size: int, seed: int) -> list[Any]:
    if len(items) <= size:
        return list(items)
    index = np.sort(np.random.default_rng(seed).choice(len(items), size, replace=False))
    return [items[i] for i in index]


def features(predictor: Predictor, items: Sequence[Any], pca: dict[str, Any]) -> pd.DataFrame:
    """One row per item: input statistics, embedding components (`pca`: mean (D,), components (K, D)), and the
    predicted label and confidence where the task predicts them."""
    embedded, predictions = predictor.embeddings(items, predict=True)  # one forward pass for both
    projected = (embedded - np.asarray(pca["mean"])) @ np.asarray(pca["components"]).T  # (N, K)
    return _table(predictor, items, projected, predictions)


def _table(predictor: Predictor, items: Sequence[Any], projected: np.ndarray, predictions: list[dict[str, Any]]
           ) -> pd.DataFrame:
    table = predictor.task.wire.statistics(list(items), predictor.meta)
    for k in range(projected.shape[1]):
        table[f"pc_{k}"] = projected[:, k]
    for key in ("label", "confidence"):
        if all(key in p for p in predictions):
            table[f"prediction_{key}"] = [p[key] for p in predictions]
    return table


def build_profile(predictor: Predictor, items: Sequence[Any], metrics: dict[str, Any] | None = None,
                  sample: int = SAMPLE, seed: int = 0) -> tuple[dict[str, Any], pd.DataFrame]:
    """The profile of (a sample of) `items`, with the run's test `metrics` beside it."""
    from sklearn.decomposition import PCA

    items = _sample(items, sample, seed)
    if len(items) < 2:
        raise DlforgeError(f"a reference profile needs at least 2 items, got {len(items)}")
    embedded, predictions = predictor.embeddings(items, predict=True)  # (N, D)
    fitted = PCA(n_components=min(COMPONENTS, *embedded.shape), random_state=seed).fit(embedded)
    pca = {"mean": fitted.mean_.tolist(), "components": fitted.components_.tolist(),
           "explained_variance_ratio": fitted.explained_variance_ratio_.tolist()}
    table = _table(predictor, items, fitted.transform(embedded), predictions)
    profile = {"task": predictor.meta["task"], "rows": len(table), "seed": seed, "pca": pca,
               "columns": {name: _describe(table[name]) for name in table.columns},
               "metrics": metrics or {}}
    return profile, table


def write_profile(run_dir: str | Path, profile: dict[str, Any], table: pd.DataFrame) -> Path:
    folder = Path(run_dir) / "profile"
    atomic_write(folder / "reference.parquet", lambda p: table.to_parquet(p, index=False))
    atomic_write_json(folder / "profile.json", profile)
    return folder


def read_profile(run_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    folder = Path(run_dir) / "profile"
    if not (folder / "profile.json").exists():
        raise DlforgeError(f"{run_dir}: no reference profile; make one with: dlforge monitor profile {run_dir}")
    return json.loads((folder / "profile.json").read_text()), pd.read_parquet(folder / "reference.parquet")


def compare(predictor: Predictor, profile: dict[str, Any], reference: pd.DataFrame, items: Sequence[Any],
            share: float = 0.5, overrides: dict[str, dict[str, Any]] | None = None, seed: int = 0
            ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Drift of `items` against the profile: inputs per column, embeddings as a whole, predictions. Returns the
    result (JSON-able) and the current items' table."""
    current = features(predictor, _sample(items, SAMPLE, seed), profile["pca"])
    pcs = [c for c in reference.columns if c.startswith("pc_")]
    predictions = [c for c in reference.columns if c.startswith("prediction_")]
    inputs = [c for c in reference.columns if c not in pcs and c not in predictions]
    input_drift = dataset_drift(reference[inputs], current[inputs], overrides=overrides, share=share)
    mmd2, p_value = mmd_test(reference[pcs].to_numpy(), current[pcs].to_numpy(), seed=seed)
    auc = domain_classifier_auc(reference[pcs].to_numpy(), current[pcs].to_numpy(), seed=seed)
    embedding = {"mmd2": mmd2, "p_value": p_value, "domain_auc": auc, "components": len(pcs),
                 "drifted": bool(p_value < MMD_P and auc > AUC_LIMIT)}
    prediction = {c.removeprefix("prediction_"): column_drift(reference[c], current[c], name=c).to_dict()
                  for c in predictions}
    result = {"rows": {"reference": len(reference), "current": len(current)}, "inputs": input_drift.to_dict(),
              "embeddings": embedding, "predictions": prediction,
              "drifted": bool(input_drift.drifted or embedding["drifted"])}
    if "prediction_confidence" in current:
        result["accuracy"] = {  # calibrated confidences: their mean is the expected accuracy
            "estimated_current": float(current["prediction_confidence"].mean()),
            "reference_mean_confidence": float(reference["prediction_confidence"].mean()),
            "reference": profile.get("metrics", {}).get("accuracy")}
    return result, current


def _describe(column: pd.Series) -> dict[str, Any]:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(np.float64)
        counts, edges = np.histogram(values[np.isfinite(values)], bins=20)
        return {"type": "numeric", "mean": float(np.nanmean(values)), "std": float(np.nanstd(values)),
                "min": float(np.nanmin(values)), "max": float(np.nanmax(values)),
                "quantiles": np.nanquantile(values, [0.05, 0.25, 0.5, 0.75, 0.95]).tolist(),
                "missing": int(np.isnan(values).sum()), "histogram": {"counts": counts.tolist(),
                                                                      "edges": edges.tolist()}}
    counts = column.astype(str).value_counts()
    return {"type": "categorical", "values": {str(k): int(v) for k, v in counts.items()},
            "missing": int(column.isna().sum())}
