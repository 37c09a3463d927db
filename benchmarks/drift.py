"""Drift detection, dlforge against Evidently on the same data: false alarms, power, agreement, digits, speed.

dlforge's `monitor.drift` follows Evidently's documented defaults (reference <= 1000 rows: KS / chi-square /
z-test at p < 0.05; above: Wasserstein / std >= 0.1 and Jensen-Shannon >= 0.1; the dataset drifts when half its
columns do). This script gives both the same frames and prints one markdown table:

1. false alarms: two samples of one distribution, a numeric, a categorical (5 values) and a binary column, over
   `--trials` seeded trials at 1000 rows (the tests' regime) and 5000 rows (the distances');
2. power: the share of the same trials that flag a numeric column whose mean moved by 0.1, 0.25 or 0.5 std;
3. agreement: the share of column-trials of 1 and 2 where both decide alike (and the largest score difference).
   Where the methods are the same they should agree every time. Chi-square differs by design: dlforge tests the
   homogeneity of both samples' counts (chi2_contingency); Evidently tests the current counts against the
   reference proportions taken as exact, which ignores the reference's own sampling noise and over-alarms;
4. digits: a small CNN trained here (seconds), its test split halved into reference and current, the current half
   brighter, blurred or noisier at three severities each. dlforge: `monitor.profile.compare` (input statistics per
   column, the embeddings' PCA components by MMD and a domain classifier). Evidently: the same per-image tables,
   the input statistics through its DataDriftTable, the PCA components through EmbeddingsDriftMetric's default
   method (a domain classifier, bootstrapped below 1000 rows; called directly: the metric also draws a t-SNE
   picture, 20 s a call). Each flags drift when its inputs or its embeddings do;
5. speed: `dataset_drift` against Evidently's `Report([DataDriftPreset()])` (and its lighter legacy
   `Report(metrics=[DataDriftTable()])`) on the same `--rows` x `--columns` frames (3/5 numeric, 2/5 categorical
   strings), best of `--repeats`, results read out included. Target: dlforge >= 5x faster.

Evidently is not a dlforge dependency: bring it in for the run. Evidently 0.7 does not import under pandas 3 (it
imports `pandas.core.dtypes.common.infer_dtype_from_object`, which pandas 3 removed), so the run takes pandas 2.3,
dlforge included:

    uv run --with 'evidently==0.7.*' --with 'pandas<3' python benchmarks/drift.py [--trials 200] [--rows 100000]

Evidently's per-column decisions are read from its legacy report (`evidently.legacy`), which states each one; the
new `evidently.Report` with `DataDriftPreset` runs the same per-column function but reports scores only. The
legacy report is quick enough (about 0.1 s a trial) for the full 200 trials.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from importlib.metadata import version
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

RUN = "uv run --with 'evidently==0.7.*' --with 'pandas<3' python benchmarks/drift.py"
SHIFTS = (0.1, 0.25, 0.5)  # mean shifts of the numeric column, in standard deviations
REGIMES = (1000, 5000)  # reference rows: statistical tests (<= 1000), distances (> 1000)
CATEGORIES = ("a", "b", "c", "d", "e"), (0.4, 0.25, 0.15, 0.12, 0.08)
COLUMNS = ("numeric", "categorical", "binary")


def load_evidently() -> SimpleNamespace:
    """Evidently's pieces, imported here only: it is not a dlforge dependency."""
    try:
        import evidently
        from evidently import DataDefinition, Dataset, Report
        from evidently.legacy.metrics import DataDriftTable
        from evidently.legacy.metrics.data_drift.embedding_drift_methods import model as embedding_drift
        from evidently.legacy.pipeline.column_mapping import ColumnMapping
        from evidently.legacy.report import Report as LegacyReport
        from evidently.presets import DataDriftPreset
    except ImportError as error:
        sys.exit(
            f"this benchmark compares with Evidently, which dlforge does not depend on ({error}).\n"
            f"Run it with Evidently 0.7 and pandas 2 beside the project's environment:\n    {RUN}"
        )
    return SimpleNamespace(
        version=evidently.__version__,
        Report=Report,
        Dataset=Dataset,
        DataDefinition=DataDefinition,
        DataDriftPreset=DataDriftPreset,
        LegacyReport=LegacyReport,
        DataDriftTable=DataDriftTable,
        embedding_drift=embedding_drift,
        ColumnMapping=ColumnMapping,
    )


@contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            yield


def evidently_legacy(
    ev: SimpleNamespace,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    metrics: list[Any] | None = None,
) -> list[dict[str, Any]]:
    """The results of a legacy Evidently report (default: one DataDriftTable) on the frames."""
    mapping = ev.ColumnMapping(numerical_features=numeric, categorical_features=categorical)
    report = ev.LegacyReport(metrics=metrics or [ev.DataDriftTable()])
    with quiet():
        report.run(reference_data=reference, current_data=current, column_mapping=mapping)
        return [m["result"] for m in report.as_dict()["metrics"]]


def by_column(table: dict[str, Any]) -> dict[str, tuple[str, float, bool]]:
    """A DataDriftTable's result as column -> (method, score, drifted)."""
    return {
        name: (c["stattest_name"], float(c["drift_score"]), bool(c["drift_detected"]))
        for name, c in table["drift_by_columns"].items()
    }


def dlforge_columns(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, tuple[str, float, bool]]:
    from dlforge.drift.statistics import dataset_drift

    with quiet():
        return {c.column: (c.method, c.score, c.drifted) for c in dataset_drift(reference, current).columns}


# ---------------------------------------------------------------- 1-3: false alarms, power, agreement


def trial_frames(rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current: numeric, categorical and binary columns from one distribution, and numeric columns
    whose current mean moved by each of SHIFTS."""
    rng = np.random.default_rng(seed)
    values, shares = CATEGORIES

    def frame(moved: bool) -> pd.DataFrame:
        columns = {
            "numeric": rng.normal(size=rows),
            "categorical": rng.choice(values, rows, p=shares),
            "binary": np.where(rng.random(rows) < 0.3, "yes", "no"),
        }
        for shift in SHIFTS:
            columns[f"shift {shift}"] = rng.normal(shift if moved else 0.0, 1.0, rows)
        return pd.DataFrame(columns)

    return frame(False), frame(True)


def run_trials(ev: SimpleNamespace, trials: int) -> dict[int, dict[str, Any]]:
    """Per regime and column: the decisions (trials, 2) of dlforge and Evidently, both methods, and the largest
    score difference."""
    numeric = ["numeric", *(f"shift {s}" for s in SHIFTS)]
    out = {}
    for rows in REGIMES:
        decisions: dict[str, list[tuple[bool, bool]]] = {}
        methods: dict[str, tuple[str, str]] = {}
        gap: dict[str, float] = {}
        started = time.perf_counter()
        for trial in range(trials):
            reference, current = trial_frames(rows, seed=1_000_000 * rows + trial)
            ours = dlforge_columns(reference, current)
            theirs = by_column(evidently_legacy(ev, reference, current, numeric, ["categorical", "binary"])[0])
            for name, (method, score, drifted) in ours.items():
                e_method, e_score, e_drifted = theirs[name]
                decisions.setdefault(name, []).append((drifted, e_drifted))
                methods[name] = (method, e_method)
                gap[name] = max(gap.get(name, 0.0), abs(score - e_score))
        print(f"{rows} rows: {trials} trials in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        out[rows] = {"decisions": {k: np.array(v) for k, v in decisions.items()}, "methods": methods, "gap": gap}
    return out


def percent(hits: np.ndarray) -> str:
    return f"{100 * hits.mean():.1f}% ({int(hits.sum())}/{len(hits)})"


def trial_rows(results: dict[int, dict[str, Any]], trials: int) -> list[list[str]]:
    rows = []
    checks = [("1", f"false alarms, {name} column", name) for name in COLUMNS]
    checks += [("2", f"power, mean shift {s} std", f"shift {s}") for s in SHIFTS]
    for number, check, name in checks:
        for n in REGIMES:
            r = results[n]
            d = r["decisions"][name]
            ours, theirs = r["methods"][name]
            rows.append(
                [
                    number,
                    check,
                    f"{n} vs {n} rows, {trials} trials",
                    f"{ours} / {theirs}",
                    percent(d[:, 0]),
                    percent(d[:, 1]),
                    percent(d[:, 0] == d[:, 1]),
                    f"max abs score difference {r['gap'][name]:.2g}",
                ]
            )
    same, chi = [], []
    for r in results.values():
        for name, d in r["decisions"].items():
            (chi if r["methods"][name][0] == "chisquare" else same).append(d[:, 0] == d[:, 1])
    used = sorted({r["methods"][n][0] for r in results.values() for n in r["methods"]} - {"chisquare"})
    rows.append(
        ["3", "agreement, same method", f"all columns and trials above ({', '.join(used)})", "", "", "",
         percent(np.concatenate(same)), "target 100%"]
    )  # fmt: skip
    rows.append(
        ["3", "agreement, chi-square", "the categorical column at 1000 rows", "homogeneity / goodness of fit", "", "",
         percent(np.concatenate(chi)), "differs by design: see below"]
    )  # fmt: skip
    return rows


# ---------------------------------------------------------------- 4: digits, corrupted


def brighter(amount: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda images: np.clip(images.astype(np.float64) + amount, 0, 255).astype(np.uint8)


def blurred(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    from scipy import ndimage

    return lambda images: (
        np.stack([ndimage.gaussian_filter(im.astype(np.float64), sigma=(sigma, sigma, 0)) for im in images])
        .round()
        .astype(np.uint8)
    )


def noisy(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    def corrupt(images: np.ndarray) -> np.ndarray:
        noise = np.random.default_rng(1).normal(0, sigma, images.shape)
        return np.clip(images + noise, 0, 255).astype(np.uint8)

    return corrupt


CORRUPTIONS = [("clean", None)]
CORRUPTIONS += [(f"brightness +{a}", brighter(a)) for a in (20, 50, 80)]
CORRUPTIONS += [(f"blur sigma {s}", blurred(s)) for s in (0.5, 1.0, 2.0)]
CORRUPTIONS += [(f"noise sigma {s}", noisy(s)) for s in (10, 25, 50)]


def train_digits(runs_dir: str, epochs: int) -> str:
    import dlforge

    spec = {
        "name": "bench-drift-digits",
        "task": "image_classification",
        "data": {"source": "builtin:digits", "split": {"val": 0.1, "test": 0.2, "seed": 0}},
        "model": {"name": "resnet_small", "kwargs": {"width": 16}},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 3e-3}, "seed": 0},
    }
    return str(dlforge.train(dlforge.validate_spec(spec), runs_dir=runs_dir, progress=False).path)


def digit_rows(ev: SimpleNamespace, epochs: int) -> list[list[str]]:
    import dlforge
    from dlforge.drift.profile import build_profile, compare
    from dlforge.drift.statistics import dataset_drift

    rows = []
    with tempfile.TemporaryDirectory() as runs:
        started = time.perf_counter()
        predictor = dlforge.load(train_digits(runs, epochs))
        print(f"digits: trained in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        images = np.asarray(predictor.task.evaluation_data(predictor.meta)[0])  # (N, 8, 8, 1) uint8, the test split
        order = np.random.default_rng(0).permutation(len(images))
        half = len(images) // 2
        reference_images, current_images = images[order[:half]], images[order[half:]]
        with quiet():
            profile, reference = build_profile(predictor, list(reference_images))
        pcs = [c for c in reference.columns if c.startswith("pc_")]
        inputs = [c for c in reference.columns if c not in pcs and not c.startswith("prediction_")]
        for name, corrupt in CORRUPTIONS:
            items = current_images if corrupt is None else corrupt(current_images)
            with quiet():
                result, current = compare(predictor, profile, reference, list(items))
                pc_share = dataset_drift(reference[pcs], current[pcs]).share
            ins, emb = result["inputs"], result["embeddings"]
            ours = (
                f"{'**drift**' if result['drifted'] else 'no drift'}: inputs {len(ins['drifted_columns'])}/"
                f"{len(ins['columns'])}; embeddings MMD p={emb['p_value']:.3f}, AUC {emb['domain_auc']:.2f}"
                f"{' (drift)' if emb['drifted'] else ''}; PCs per column {pc_share:.0%}"
            )
            table = evidently_legacy(ev, reference, current, inputs, [])[0]
            pc_table = evidently_legacy(ev, reference, current, pcs, [])[0]
            with quiet():  # what EmbeddingsDriftMetric runs, less the t-SNE picture it draws (20 s a call)
                auc, embedded, _ = ev.embedding_drift(bootstrap=len(reference) < 1000)(current[pcs], reference[pcs])
            theirs_drifted = bool(table["dataset_drift"] or embedded)
            theirs = (
                f"{'**drift**' if theirs_drifted else 'no drift'}: inputs {table['number_of_drifted_columns']}/"
                f"{table['number_of_columns']}; embeddings classifier AUC {auc:.2f}"
                f"{' (drift)' if embedded else ''}; PCs per column "
                f"{pc_table['share_of_drifted_columns']:.0%}"
            )
            same = "yes" if theirs_drifted == result["drifted"] else "**no**"
            rows.append(
                ["4", f"digits, {name}", f"{len(reference)} vs {len(current)} test digits", "profile.compare / "
                 "DataDriftTable + embeddings classifier", ours, theirs, same, ""]
            )  # fmt: skip
    return rows


# ---------------------------------------------------------------- 5: speed


def wide_frames(rows: int, columns: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """3/5 numeric columns (every third moved by 0.25 std), 2/5 categorical strings of 8 values (every other one
    re-weighted)."""
    rng = np.random.default_rng(seed)
    levels = np.array([f"level_{i}" for i in range(8)], dtype=object)
    reference, current = {}, {}
    for j in range(columns):
        if j % 5 < 3:
            reference[f"num_{j}"] = rng.normal(size=rows)
            current[f"num_{j}"] = rng.normal(0.25 if j % 3 == 0 else 0.0, 1.0, rows)
        else:
            p = rng.dirichlet(np.ones(8))
            q = (p + 1 / 8) / 2 if j % 2 else p
            reference[f"cat_{j}"] = levels[rng.choice(8, rows, p=p)]
            current[f"cat_{j}"] = levels[rng.choice(8, rows, p=q)]
    return pd.DataFrame(reference), pd.DataFrame(current)


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def speed_rows(ev: SimpleNamespace, rows: int, columns: int, repeats: int) -> list[list[str]]:
    from dlforge.drift.statistics import dataset_drift

    reference, current = wide_frames(rows, columns)
    numeric = [c for c in reference if c.startswith("num_")]
    categorical = [c for c in reference if c.startswith("cat_")]
    data = f"{rows:,} vs {rows:,} rows x {columns} columns ({len(numeric)} numeric, {len(categorical)} categorical)"

    def ours() -> dict[str, bool]:
        with quiet():
            return {c.column: c.drifted for c in dataset_drift(reference, current).columns}

    def preset() -> float:
        definition = ev.DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        with quiet():
            snapshot = ev.Report([ev.DataDriftPreset()]).run(
                ev.Dataset.from_pandas(current, data_definition=definition),
                ev.Dataset.from_pandas(reference, data_definition=definition),
            )
            return snapshot.dict()["metrics"][0]["value"]["count"]  # DriftedColumnsCount

    def legacy() -> dict[str, bool]:
        table = evidently_legacy(ev, reference, current, numeric, categorical)[0]
        return {name: drifted for name, (_, _, drifted) in by_column(table).items()}

    full = reference, current
    reference, current = reference.head(200), current.head(200)
    ours(), preset(), legacy()  # warm-up: imports, registries, caches
    reference, current = full
    t_ours, decided = best_of(repeats, ours)
    print(f"speed: dlforge {t_ours:.1f} s", file=sys.stderr)
    t_preset, count = best_of(repeats, preset)
    print(f"speed: Evidently Report + DataDriftPreset {t_preset:.1f} s", file=sys.stderr)
    t_legacy, theirs = best_of(repeats, legacy)
    print(f"speed: Evidently legacy DataDriftTable {t_legacy:.1f} s", file=sys.stderr)
    arrow = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas 3's default `str` dtype for strings
    reference, current = (f.astype(dict.fromkeys(categorical, arrow)) for f in full)
    t_arrow, decided_arrow = best_of(repeats, ours)
    drifted = sum(decided.values())
    agree = sum(decided[c] == theirs[c] for c in decided)
    method = f"dataset_drift / {{}}, best of {repeats}"
    return [
        ["5", "time, Report + DataDriftPreset", data, method.format("Report([DataDriftPreset()])"),
         f"{t_ours:.2f} s", f"{t_preset:.2f} s", f"{drifted} vs {count:.0f} columns drifted",
         f"**{t_preset / t_ours:.1f}x** faster (target >= 5x)"],
        ["5", "time, legacy DataDriftTable", data, method.format("legacy Report([DataDriftTable()])"),
         f"{t_ours:.2f} s", f"{t_legacy:.2f} s", f"{100 * agree / len(decided):.1f}% ({agree}/{len(decided)})",
         f"**{t_legacy / t_ours:.1f}x** faster"],
        ["5", "time, dlforge on Arrow strings", data + ", the categorical ones as pandas 3 `str` (Arrow)",
         "dataset_drift", f"{t_arrow:.2f} s", "", "yes" if decided_arrow == decided else "**no** (vs object strings)",
         f"{t_arrow / t_ours:.1f}x the time on object strings"],
    ]  # fmt: skip


# ---------------------------------------------------------------- the table


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200, help="seeded trials per regime for rows 1-3")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of each frame in the speed rows (5)")
    parser.add_argument("--columns", type=int, default=100, help="columns of the speed frames")
    parser.add_argument("--repeats", type=int, default=2, help="timings are the best of this many")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the digits CNN")
    parser.add_argument("--skip", nargs="*", default=[], choices=["trials", "digits", "speed"])
    args = parser.parse_args()
    ev = load_evidently()

    rows = []
    if "trials" not in args.skip:
        rows += trial_rows(run_trials(ev, args.trials), args.trials)
    if "digits" not in args.skip:
        rows += digit_rows(ev, args.epochs)
    if "speed" not in args.skip:
        rows += speed_rows(ev, args.rows, args.columns, args.repeats)
    header = ["#", "check", "data", "method (dlforge / Evidently)", "dlforge", "Evidently", "same decision", "note"]
    print(
        f"\n### Drift: dlforge {version('dlforge')} against Evidently {ev.version} "
        f"(pandas {pd.__version__}, numpy {np.__version__}, {os.cpu_count()} CPU cores)\n"
    )
    print(markdown(header, rows))
    print(
        "\nRows 1-2 give the share of trials that flag the column; 'same decision' the share where both flag alike.\n"
        "Chi-square (categorical column, <= 1000 rows) differs by design: dlforge tests the homogeneity of the two\n"
        "samples' counts; Evidently's goodness-of-fit test takes the reference proportions as exact, so on two\n"
        "samples of one distribution its statistic is about twice as large as it assumes and it alarms far above 5%.\n"
        "Digits: inputs = the per-image statistics (width, height, brightness, contrast, sharpness) tested per\n"
        "column, drifted at half of them; embeddings = the model's embeddings in their PCA components (dlforge: MMD\n"
        "p < 0.05 and domain-classifier AUC > 0.55; Evidently: its classifier AUC above the 95th percentile of\n"
        "random AUCs); 'PCs per column' = the share of components drifted per column, for reference only.\n"
        "Speed: pandas 2.3 here (Evidently 0.7 needs it); under pandas 3, dlforge's own default, string columns are\n"
        "Arrow `str`, which the last row times."
    )


if __name__ == "__main__":
    main()
