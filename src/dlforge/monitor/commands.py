"""`dlforge monitor RUN --data SOURCE | --from-log DB`: drift of new data against the run's reference profile,
as drift.json and drift.html (histograms of the drifted inputs, the drift table, reference and current
embeddings in their first two components, prediction distributions)."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from dlforge._io import atomic_write_json, atomic_write_text
from dlforge.drift.profile import compare, read_profile
from dlforge.errors import DlforgeError, InputError
from dlforge.predictor import Predictor
from dlforge.run import Run
from dlforge.tasks.capabilities import Profiled

SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str) -> float:
    """'90s', '30m', '1h', '7d' -> seconds."""
    match = SINCE.match(text.strip())
    if match is None:
        raise DlforgeError(f"--since {text!r}: give a duration like 30m, 1h or 7d")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def logged_items(predictor: Predictor, path: str | Path, since: str | None = None) -> list[Any]:
    """The inputs a server logged (`serve.request_log`), decoded as the server decoded them."""
    from dlforge.request_log import read_log

    if not Path(path).exists():
        raise DlforgeError(f"{path}: no such request log")
    rows = read_log(path, since=time.time() - parse_since(since) if since else None)
    limits = predictor.spec.serve.limits
    items = []
    for row in rows:
        try:
            items.append(predictor.wire.decode(row["input"], f"{path} row {row['id']}", limits))
        except InputError:
            continue  # the server answered it with a 4xx too
    return items


def monitor_run(run_dir: str | Path, data: str | None = None, from_log: str | Path | None = None,
                since: str | None = None, out: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """Compare `data` (a source the task reads; labels, if any, are not used) or a request log with the run's
    reference profile; returns (result, output folder)."""
    if (data is None) == (from_log is None):
        raise DlforgeError("give the current data: --data SOURCE or --from-log REQUESTS.sqlite")
    run = Run.open(run_dir)
    profile, reference = read_profile(run.path)
    predictor = Predictor.from_run(run)
    profiled = predictor.capability(Profiled)
    items = list(predictor.evaluation_data(data)[0]) if data else logged_items(predictor, from_log, since)
    items = profiled.profile_items(items, predictor.meta)
    if len(items) < 10:
        raise DlforgeError(f"{data or from_log}: {len(items)} items to compare; drift needs at least 10")
    result, current = compare(predictor, profile, reference, items)
    result |= {"run": str(run.path), "current": str(data or from_log), "since": since,
               "checked": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    folder = Path(out) if out is not None else run.path / "monitoring" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    write_drift_report(result, reference, current, folder)
    atomic_write_json(folder / "drift.json", result)  # last: a folder with drift.json is complete
    return result, folder


def profile_run(run_dir: str | Path, data: str | None = None) -> Path:
    """Write (or rewrite) a run's reference profile from `data`, or from its test split: for runs trained before
    profiles existed, or to profile another reference set."""
    from dlforge.drift.profile import build_profile, write_profile

    run = Run.open(run_dir)
    predictor = Predictor.from_run(run)
    items = predictor.capability(Profiled).profile_items(predictor.evaluation_data(data)[0], predictor.meta)
    metrics = (run.read_eval() or {}).get("metrics", {}) if data is None else {}
    return write_profile(run.path, *build_profile(predictor, items, metrics=metrics))


def write_drift_report(result: dict[str, Any], reference: pd.DataFrame, current: pd.DataFrame, folder: Path
                       ) -> Path:
    from dlforge import plots
    from dlforge.pages import Section, figure, render, table

    inputs, emb, pictures = result["inputs"], result["embeddings"], folder / "plots"
    summary = [
        ["inputs", f"{len(inputs['drifted_columns'])} of {len(inputs['columns'])} columns drifted (share "
                   f"{inputs['share']:.2f}; the dataset drifts at {inputs['threshold']})"],
        ["embeddings", "none (the model has no layer that sees one vector per item)" if emb is None else
         f"MMD p = {emb['p_value']:.3g}, domain-classifier ROC-AUC = {emb['domain_auc']:.3f}: "
         f"{'drift' if emb['drifted'] else 'no drift'}"],
        ["rows", f"reference {result['rows']['reference']}, current {result['rows']['current']}"]]
    if "accuracy" in result:
        a = result["accuracy"]
        summary.append(["accuracy (label-free estimate)", f"{a['estimated_current']:.3f} now (the mean confidence, "
                        "temperature-scaled at training); "
                        f"reference mean confidence {a['reference_mean_confidence']:.3f}, test accuracy "
                        f"{a['reference']}"])
    sections = [Section("Summary", table(["", ""], summary))]
    rows = [[c["column"], c["kind"], c["method"], f"{c['score']:.4g}", c["threshold"], "yes" if c["drifted"] else "",
             f"{c['psi']:.3f}"] for c in inputs["columns"]]
    body = table(["column", "kind", "method", "score", "threshold", "drifted", "PSI"], rows)
    drifted = [c for c in inputs["drifted_columns"] if pd.api.types.is_numeric_dtype(reference[c])][:12]
    if drifted:
        plots.drift_histograms({c: reference[c].to_numpy(float) for c in drifted},
                               {c: current[c].to_numpy(float) for c in drifted}, pictures / "drifted_inputs.png")
        body += figure(pictures / "drifted_inputs.png", "reference and current, the drifted inputs")
    sections.append(Section("Inputs, worst first", body))
    if {"pc_0", "pc_1"} <= set(reference):
        plots.embedding_scatter(reference[["pc_0", "pc_1"]].to_numpy(), current[["pc_0", "pc_1"]].to_numpy(),
                                pictures / "embeddings.png")
        sections.append(Section("Embeddings", figure(pictures / "embeddings.png", "reference and current items in "
                                                     "the first two principal components of the model's embeddings")))
    body = table(["prediction", "method", "score", "drifted"], [[name, c["method"], f"{c['score']:.4g}",
                                                                 "yes" if c["drifted"] else ""]
                                                                for name, c in result["predictions"].items()])
    if "prediction_label" in reference:
        plots.distribution_bars(reference["prediction_label"].value_counts(normalize=True).to_dict(),
                                current["prediction_label"].value_counts(normalize=True).to_dict(),
                                pictures / "predictions.png")
        body += figure(pictures / "predictions.png", "predicted classes, reference and current")
    sections.append(Section("Predictions", body))
    verdict = "drift" if result["drifted"] else "no drift"
    page = render(f"Drift: {verdict}", f"{result['run']} against {result['current']} ({result['checked']})",
                  sections)
    return atomic_write_text(folder / "drift.html", page)
