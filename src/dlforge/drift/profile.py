"""The reference profile of a run, and the comparison of new data with it.

A profile describes a sample of reference items (up to 2000; `Profiled.profile_items`: for forecasting, every
lookback window) as a table, one row per item:
- the task's input statistics (`Task.wire.statistics`: image size, brightness, contrast, sharpness;
  text length, ...; each series column's value and window std; a table's columns themselves);
- the model's own embeddings (the input of its head, `Predictor.embeddings`), reduced with PCA to at
  most 20 components `pc_0, pc_1, ...` (the projection is kept, so new items land in the same space),
  where the model has one vector per item;
- the predictions as columns (`prediction_columns`): label, confidence and class probabilities; forecast
  quantiles; object counts; class pixel shares.

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
from dlforge.drift.statistics import column_drift, dataset_drift, domain_classifier_auc, mmd_test
from dlforge.errors import DlforgeError
from dlforge.predictor import NoEmbedding, Predictor
from dlforge.tasks.capabilities import Profiled

SAMPLE, COMPONENTS = 2000, 20
MMD_P, AUC_LIMIT = 0.05, 0.55  # embedding drift: MMD p-value below, domain-classifier ROC-AUC above


def _sample(items: Sequence[Any], size: int, seed: int) -> list[Any]:
    if len(items) <= size:
        return list(items)
    index = np.sort(np.random.default_rng(seed).choice(len(items), size, replace=False))
    return [items[i] for i in index]


def _embed(predictor: Predictor, items: Sequence[Any]) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
    """(embeddings (N, D) or None, predictions), from one forward pass where the model has an embedding."""
    try:
        return predictor.embeddings(items, predict=True)
    except NoEmbedding:  # dense heads, per-step decoders: inputs and predictions only
        return None, predictor.predict(items)


def features(predictor: Predictor, items: Sequence[Any], pca: dict[str, Any] | None) -> pd.DataFrame:
    """One row per item: input statistics, embedding components (`pca`: mean (D,), components (K, D)), and the
    predictions as columns."""
    embedded, predictions = _embed(predictor, items) if pca else (None, predictor.predict(items))
    projected = None if embedded is None else (embedded - np.asarray(pca["mean"])) @ np.asarray(pca["components"]).T
    return _table(predictor, items, projected, predictions)  # projected: (N, K)


def prediction_columns(predictions: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Predictions as columns, whatever the task: numbers and strings as they are, lists of numbers by their
    mean, other lists by their length, objects of numbers one column per key (a missing key is 0)."""
    columns: dict[str, list[Any]] = {}
    for key, value in predictions[0].items() if predictions else ():
        values = [p.get(key) for p in predictions]
        if isinstance(value, bool | int | float | str):
            columns[key] = values
        elif isinstance(value, list):  # numbers by their mean (an empty list: missing), anything else by count
            flat = [v for p in values for v in p]
            if flat and all(isinstance(v, int | float) for v in flat):
                columns[key] = [float(np.mean(v)) if v else np.nan for v in values]
            else:
                columns[f"{key}_count"] = [len(v) for v in values]
        elif isinstance(value, dict) and all(isinstance(v, int | float) for p in values for v in p.values()):
            for sub in sorted({k for p in values for k in p}):
                columns[f"{key}.{sub}"] = [p.get(sub, 0.0) for p in values]
    return columns


def _table(predictor: Predictor, items: Sequence[Any], projected: np.ndarray | None,
           predictions: list[dict[str, Any]]) -> pd.DataFrame:
    table = predictor.capability(Profiled).input_statistics(items, predictor.meta)
    for k in range(0 if projected is None else projected.shape[1]):
        table[f"pc_{k}"] = projected[:, k]
    for name, values in prediction_columns(predictions).items():
        table[f"prediction_{name}"] = values
    return table


def build_profile(predictor: Predictor, items: Sequence[Any], metrics: dict[str, Any] | None = None,
                  sample: int = SAMPLE, seed: int = 0) -> tuple[dict[str, Any], pd.DataFrame]:
    """The profile of (a sample of) `items` (made by the task's `profile_items`), with the run's test `metrics`
    beside it."""
    from sklearn.decomposition import PCA

    items = _sample(items, sample, seed)
    if len(items) < 2:
        raise DlforgeError(f"a reference profile needs at least 2 items, got {len(items)}")
    embedded, predictions = _embed(predictor, items)  # (N, D) or None
    pca, projected = None, None
    if embedded is not None:
        fitted = PCA(n_components=min(COMPONENTS, *embedded.shape), random_state=seed).fit(embedded)
        pca = {"mean": fitted.mean_.tolist(), "components": fitted.components_.tolist(),
               "explained_variance_ratio": fitted.explained_variance_ratio_.tolist()}
        projected = fitted.transform(embedded)
    table = _table(predictor, items, projected, predictions)
    # free text and identifiers (a generated text, a series id per window) are no distribution to compare
    unique = [c for c in table.columns if table[c].dtype == object and table[c].nunique() > max(20, len(table) // 2)]
    table = table.drop(columns=unique)
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
    """Drift of `items` (made by the task's `profile_items`) against the profile: inputs per column, embeddings
    as a whole, predictions. Returns the result (JSON-able) and the current items' table."""
    current = features(predictor, _sample(items, SAMPLE, seed), profile["pca"])
    return compare_tables(profile, reference, current, share, overrides, seed), current


def compare_tables(profile: dict[str, Any], reference: pd.DataFrame, current: pd.DataFrame, share: float = 0.5,
                   overrides: dict[str, dict[str, Any]] | None = None, seed: int = 0) -> dict[str, Any]:
    """`compare` once the current items are a table (`features`): statistics only, no model."""
    pcs = [c for c in reference.columns if c.startswith("pc_")]
    predictions = [c for c in reference.columns if c.startswith("prediction_") and c in current]
    inputs = [c for c in reference.columns if c not in pcs and not c.startswith("prediction_")]
    input_drift = dataset_drift(reference[inputs], current.reindex(columns=inputs), overrides=overrides, share=share)
    embedding = embedding_drift(reference[pcs].to_numpy(), current[pcs].to_numpy(), seed) if pcs else None
    prediction = {c.removeprefix("prediction_"): column_drift(reference[c], current[c], name=c).to_dict()
                  for c in predictions if reference[c].notna().any() and current[c].notna().any()}
    result = {"rows": {"reference": len(reference), "current": len(current)}, "inputs": input_drift.to_dict(),
              "embeddings": embedding, "predictions": prediction,
              "drifted": bool(input_drift.drifted or (embedding or {}).get("drifted"))}
    if "prediction_confidence" in current:
        result["accuracy"] = {  # calibrated confidences: their mean is the expected accuracy
            "estimated_current": float(current["prediction_confidence"].mean()),
            "reference_mean_confidence": float(reference["prediction_confidence"].mean()),
            "reference": profile.get("metrics", {}).get("accuracy")}
    return result


def embedding_drift(reference: np.ndarray, current: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """MMD permutation test and domain classifier on embedding components (N, K): drift when both agree."""
    mmd2, p_value = mmd_test(reference, current, seed=seed)
    auc = domain_classifier_auc(reference, current, seed=seed)
    return {"mmd2": mmd2, "p_value": p_value, "domain_auc": auc, "components": reference.shape[1],
            "drifted": bool(p_value < MMD_P and auc > AUC_LIMIT)}


def _describe(column: pd.Series) -> dict[str, Any]:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(np.float64)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return {"type": "numeric", "missing": int(np.isnan(values).sum())}
        counts, edges = np.histogram(finite, bins=20)
        return {"type": "numeric", "mean": float(finite.mean()), "std": float(finite.std()),
                "min": float(finite.min()), "max": float(finite.max()),
                "quantiles": np.quantile(finite, [0.05, 0.25, 0.5, 0.75, 0.95]).tolist(),
                "missing": int(np.isnan(values).sum()), "histogram": {"counts": counts.tolist(),
                                                                      "edges": edges.tolist()}}
    counts = column.astype(str).value_counts()
    return {"type": "categorical", "values": {str(k): int(v) for k, v in counts.items()},
            "missing": int(column.isna().sum())}
