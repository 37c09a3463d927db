"""`dlforge audit RUN --sensitive COL[,COL]`: a classifier's data and decisions compared across groups.

1. The data the task evaluates on (`Auditable.audit_data`: the run's test split, or `--data`), with the group columns.
2. The data audit per column: group sizes, base rates, missing values, proxies (`data_audit`).
3. With `--mitigate threshold`: fairlearn's ThresholdOptimizer fitted on one half of the audited rows (stratified
   by group and label) and stored in the run (`fairness/thresholds.json`); the other half, which it never saw,
   measures it: a before/after table with the accuracy it costs.
4. The model audit per column (`model_audit`) of the decisions as `Predictor.predict` makes them: the model's own,
   or with the run's group thresholds when it has them.
5. `<run>/audit/audit.json` and `audit.html`; the run's report and model card are rewritten to include it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from dlforge._io import atomic_write_json
from dlforge.data.groups import parse_columns, positive_class, sensitive_groups, small_groups
from dlforge.errors import DlforgeError
from dlforge.fairness.data_audit import group_table, proxies
from dlforge.fairness.model_audit import CI, metric_frame, summary
from dlforge.fairness.model_audit import audit_column as model_column
from dlforge.fairness.thresholds import fit_thresholds
from dlforge.tasks.thresholds import THRESHOLDS, GroupThresholds, draws

log = logging.getLogger("dlforge")

MITIGATIONS = ("threshold",)


def audit_run(run_dir: str | os.PathLike, sensitive: str | list[str], data: str | None = None,
              positive: str | None = None, mitigate: str | None = None, constraint: str = "demographic_parity",
              n_boot: int = 100, min_group: int = 10, device: str = "cpu", seed: int = 0) -> tuple[dict, Path]:
    """Audit a finished classification run; (the audit as written to audit.json, the folder it is in)."""
    from dlforge.predictor import Predictor
    from dlforge.report.html import write_report
    from dlforge.run import Run
    from dlforge.tasks.capabilities import Auditable

    run = Run.open(run_dir)
    columns = parse_columns(sensitive)
    predictor = Predictor.from_run(run, device=device)
    meta = predictor.meta
    if not predictor.can(Auditable):
        raise DlforgeError(f"{meta['task']}: an audit compares a classifier's decisions across groups; this run does "
                           "not classify")
    if mitigate is not None and mitigate not in MITIGATIONS:
        raise DlforgeError(f"--mitigate {mitigate!r}: choose {', '.join(MITIGATIONS)} (reweighing is a training "
                           "option: train.fairness.reweigh)")
    if mitigate is not None and len(columns) != 1:
        raise DlforgeError(f"--mitigate {mitigate}: thresholds are fitted for one sensitive column; give one of "
                           f"{', '.join(columns)}")
    classes = meta["classes"]
    k = positive_class(classes, positive)
    task = predictor.capability(Auditable)
    items, targets, frame = task.audit_data(meta, data)
    groups = sensitive_groups(frame, columns, "--sensitive")
    notes, compared = _compared_groups(groups, min_group)
    y = (np.asarray(targets) == k).astype(int)
    probs = task.probabilities(predictor.outputs(items), meta).numpy()  # (N, K), as the Predictor computes them
    scores, own, item_draws = probs[:, k], probs.argmax(1) == k, draws(items)

    result: dict[str, Any] = {
        "run": run.path.name, "data_source": data or "test split", "rows": len(items), "classes": classes,
        "positive": classes[k], "sensitive": columns, "min_group": min_group,
        "bootstrap": {"n_boot": n_boot, "ci": list(CI), "random_state": seed} if n_boot else None,
        "training": meta.get("fairness"), "warnings": notes}
    if mitigate == "threshold":
        c = columns[0]
        result["mitigation"] = _thresholds(run.path, c, scores, y, groups[c], own, item_draws, classes[k],
                                           constraint, compared[c], data or "test split", seed)
    thresholds = GroupThresholds.load(run.path)
    decided = own
    if thresholds is not None:
        by = sensitive_groups(frame, [thresholds.column], f"the run's group thresholds ({THRESHOLDS})")
        decided = thresholds.decide(scores, by[thresholds.column], item_draws, own)
    result["decisions"] = "the model's" if thresholds is None else \
        f"with group thresholds by {thresholds.column} ({THRESHOLDS}, {thresholds.constraint})"
    y_pred = decided.astype(int)

    if n_boot:
        log.info("per-group intervals: %d bootstrap resamples of %d rows per column (fairlearn MetricFrame; "
                 "--n-boot sets how many)", n_boot, len(items))
    result["data"] = {"groups": {}, "proxies": {}, "proxies_skipped": {}}
    result["model"] = {}
    for column in columns:
        result["data"]["groups"][column] = group_table(groups[column], y, frame)
        found, skipped = proxies(frame, groups[column], {column}, seed)
        result["data"]["proxies"][column], result["data"]["proxies_skipped"][column] = found, skipped
        result["model"][column] = model_column(y, y_pred, scores, groups[column], column, compared[column],
                                               n_boot or None, seed)
    folder = run.path / "audit"
    atomic_write_json(folder / "audit.json", result)
    from dlforge.fairness.report import write_html

    write_html(result, folder)
    write_report(run)  # the report and model card now carry the audit
    return result, folder


def _compared_groups(groups: dict[str, np.ndarray], min_group: int) -> tuple[list[str], dict[str, list[str]]]:
    """(warnings, {column: the groups with at least `min_group` members}): smaller groups are shown, flagged, and
    left out of differences and ratios; fewer than two groups to compare is an error."""
    notes, compared = [], {}
    for column, names in groups.items():
        small = small_groups(names, min_group)
        if small:
            note = (f"--sensitive {column}: group(s) with fewer than {min_group} members, left out of the differences "
                    f"and ratios and flagged: " + ", ".join(f"{g!r} ({n})" for g, n in small.items()))
            log.warning(note)
            notes.append(note)
        compared[column] = sorted(set(names.astype(str)) - set(small))
        if len(compared[column]) < 2:
            raise DlforgeError(f"--sensitive {column}: {len(set(names.astype(str)))} group(s), "
                               f"{len(compared[column])} with at least {min_group} members (--min-group); an audit "
                               "compares two or more")
    return notes, compared


def _thresholds(run_dir: Path, column: str, scores: np.ndarray, y: np.ndarray, groups: np.ndarray, own: np.ndarray,
                item_draws: np.ndarray, positive: str, constraint: str, compared: list[str], source: str,
                seed: int) -> dict[str, Any]:
    """Fit on one half, store in the run, and compare before and after on the other half."""
    fit, held = halves(groups, y, seed)
    thresholds, _ = fit_thresholds(scores[fit], y[fit], groups[fit], column, positive, constraint,
                                   fitted_on={"data": source, "rows": len(fit), "seed": seed})
    thresholds.save(run_dir)
    after = thresholds.decide(scores[held], groups[held], item_draws[held], own[held])
    rows = [comparison_row(name, y[held], decided.astype(int), groups[held], compared)
            for name, decided in (("model", own[held]), ("model + group thresholds", after))]
    return {"method": "threshold", "constraint": constraint, "column": column, "fit_rows": len(fit),
            "eval_rows": len(held), "thresholds": str(THRESHOLDS), "groups": thresholds.groups, "rows": rows,
            "accuracy_cost": rows[0]["accuracy"] - rows[1]["accuracy"]}


def halves(groups: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of the rows, stratified by group and label where every cell has two rows."""
    from sklearn.model_selection import train_test_split

    cells = np.char.add(groups.astype(str), y.astype(str))
    counts = np.unique(cells, return_counts=True)[1]
    first, second = train_test_split(np.arange(len(y)), test_size=0.5, random_state=seed,
                                     stratify=cells if counts.min() >= 2 else None)
    return np.sort(first), np.sort(second)


def comparison_row(name: str, y: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, compared: list[str]
                   ) -> dict[str, Any]:
    """Accuracy, fairlearn's summary and the selection rate per group of one set of 0/1 decisions."""
    from sklearn.metrics import accuracy_score

    frame = metric_frame(y, y_pred, y_pred.astype(float), groups, "group")
    rates = {str(g): float(v) for g, v in frame.by_group["selection_rate"].items()}
    return {"name": name, "accuracy": float(accuracy_score(y, y_pred)), **summary(y, y_pred, groups, compared),
            "selection_rate": rates}
