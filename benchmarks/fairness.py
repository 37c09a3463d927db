"""Fairness mitigation on UCI Adult (`builtin:adult`, the full files), sensitive column `sex`, positive class >50K.

Side by side, on the same rows (the half of adult.test that the threshold optimizer is not fitted on; the other half
fits it, as `dlforge audit --mitigate threshold` does), one markdown table of accuracy, demographic-parity difference
and ratio, and equalized-odds difference (fairlearn's functions) for:

1. the dlforge MLP (embeddings for categories, hidden 64-32), trained on adult.data (10% validation) without
   mitigation;
2. the same MLP trained with Kamiran-Calders reweighing by sex (`train.fairness.reweigh: [sex]`);
3. the MLP of 1 with fairlearn's ThresholdOptimizer (demographic parity), through `dlforge audit --mitigate
   threshold`, decisions as the Predictor makes them;
4. fairlearn's ExponentiatedGradient (DemographicParity) around a scikit-learn logistic regression on one-hot
   categories and standardised numbers, fitted on adult.data; and the logistic regression alone, for reference.

    uv run python benchmarks/fairness.py [--epochs 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import dlforge
from dlforge.data.groups import group_names
from dlforge.data.tables import read_tables
from dlforge.fairness import audit_run
from dlforge.fairness.audit import halves

SENSITIVE, POSITIVE = "sex", ">50K"


def spec(epochs: int, seed: int, **fairness: object) -> dict:
    return {"name": "adult-fairness", "task": "tabular_classification",
            "data": {"source": "builtin:adult", "exclude": ["fnlwgt"], "split": {"val": 0.1, "seed": seed}},
            "model": {"name": "mlp", "kwargs": {"hidden": [64, 32]}},
            "train": {"epochs": epochs, "batch_size": 256, "optimizer": {"lr": 0.003}, "seed": seed,
                      "fairness": fairness}}


def scores(y: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    from fairlearn.metrics import (
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
    )
    from sklearn.metrics import accuracy_score

    kw = {"sensitive_features": groups}
    return {"accuracy": accuracy_score(y, y_pred), "DP difference": demographic_parity_difference(y, y_pred, **kw),
            "DP ratio": demographic_parity_ratio(y, y_pred, **kw),
            "EO difference": equalized_odds_difference(y, y_pred, **kw)}


def mlp_decisions(run: Path, items: list[dict]) -> np.ndarray:
    return np.array([p["label"] == POSITIVE for p in dlforge.load(run).predict(items)], dtype=int)


def exponentiated_gradient(train: list[dict], y_train: np.ndarray, test: list[dict], seed: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(logistic regression's decisions, ExponentiatedGradient's) on `test`."""
    import pandas as pd
    from fairlearn.reductions import DemographicParity, ExponentiatedGradient
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frames = [pd.DataFrame(rows).drop(columns=["fnlwgt"]) for rows in (train, test)]  # raw and cleaned rows
    numeric = [c for c in frames[0] if pd.to_numeric(frames[0][c], errors="coerce").notna().sum()
               == frames[0][c].notna().sum()]  # every value a number (as text or not)
    categorical = [c for c in frames[0] if c not in numeric]
    for f in frames:
        f[numeric] = f[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
        f[categorical] = f[categorical].fillna("(missing)").astype(str)
    encode = make_column_transformer(
        (make_pipeline(SimpleImputer(), StandardScaler()), numeric),
        (OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical))
    x_train, x_test = encode.fit_transform(frames[0]), encode.transform(frames[1])
    sex = group_names(frames[0][SENSITIVE].tolist())
    logistic = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    mitigated = ExponentiatedGradient(LogisticRegression(max_iter=1000), DemographicParity())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mitigated.fit(x_train, y_train, sensitive_features=sex)
    return logistic.predict(x_test), mitigated.predict(x_test, random_state=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="dlforge-fairness-"))
    seconds: dict[str, float] = {}
    try:
        runs = {}
        for name, fairness in (("plain", {}), ("reweighed", {"reweigh": [SENSITIVE]})):
            t = time.perf_counter()
            runs[name] = dlforge.train(dlforge.validate_spec(spec(args.epochs, args.seed, **fairness)),
                                       folder / name, progress=False).path
            seconds[name] = time.perf_counter() - t
        predictor = dlforge.load(runs["plain"])
        items, targets = predictor.task.evaluation_data(predictor.meta)  # adult.test, whole rows
        items = list(items)
        y = (np.asarray(targets) == predictor.meta["classes"].index(POSITIVE)).astype(int)
        groups = group_names([row[SENSITIVE] for row in items])
        _, held = halves(groups, y, args.seed)  # what audit --mitigate threshold measures on
        thresholded = Path(shutil.copytree(runs["plain"], folder / "thresholded"))
        t = time.perf_counter()
        audit_run(thresholded, SENSITIVE, mitigate="threshold", n_boot=0, seed=args.seed)
        seconds["thresholded"] = seconds["plain"] + time.perf_counter() - t

        train_table = read_tables("builtin:adult")[0]
        train_rows = train_table.rows("income")
        y_train = (np.asarray(train_table.frame["income"]) == POSITIVE).astype(int)
        t = time.perf_counter()
        logistic, mitigated = exponentiated_gradient(train_rows, y_train, [items[i] for i in held], args.seed)
        seconds["expgrad"] = time.perf_counter() - t

        test = [items[i] for i in held]
        rows = {"MLP": mlp_decisions(runs["plain"], test),
                "MLP + reweighing (Kamiran-Calders)": mlp_decisions(runs["reweighed"], test),
                "MLP + ThresholdOptimizer (DP)": mlp_decisions(thresholded, test),
                "LogisticRegression + ExponentiatedGradient (DP)": mitigated,
                "LogisticRegression (reference)": logistic}
        print(f"UCI Adult, sensitive `{SENSITIVE}`, positive `{POSITIVE}`: {len(held)} rows of adult.test (the half "
              f"the threshold optimizer was not fitted on); MLP {args.epochs} epochs, seed {args.seed}\n")
        print("| method | accuracy | DP difference | DP ratio | EO difference |")
        print("|---|---|---|---|---|")
        for name, decided in rows.items():
            s = scores(y[held], np.asarray(decided).astype(int), groups[held])
            print(f"| {name} | {s['accuracy']:.4f} | {s['DP difference']:.4f} | {s['DP ratio']:.3f} | "
                  f"{s['EO difference']:.4f} |")
        print(f"\nseconds: MLP training with evaluation and report {seconds['plain']:.0f} (imports included) and "
              f"{seconds['reweighed']:.0f} (reweighed); threshold fit and audit "
              f"{seconds['thresholded'] - seconds['plain']:.0f}; one-hot encoding, logistic regression and "
              f"ExponentiatedGradient {seconds['expgrad']:.0f}; {time.perf_counter() - started:.0f} in all")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
