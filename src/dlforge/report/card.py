"""`card.md`: a model card for every run, filled from what its directory holds.

Hugging Face model-card front matter (library_name, tags, datasets, metrics, base_model, and a model-index with
the test results, written by `huggingface_hub.ModelCardData`), then the sections of Mitchell et al. 2019, "Model
Cards for Model Reporting": Model Details, Intended Use, Factors, Metrics, Evaluation Data, Training Data,
Quantitative Analyses, Ethical Considerations, Caveats and Recommendations.

What a run cannot know (intended use, out-of-scope uses, ethical notes) comes from the spec's `card:` section;
where it is empty the card says so. What the run does know (spec, data, metrics, calibration, the fairness audit,
explanation checks, the drift reference) fills the rest. The report rewrites the card each time it is written,
so an audit or a new profile shows up in both.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlforge.run import Run

HUB_TASKS = {"semantic_segmentation": "image-segmentation", "forecasting": "time-series-forecasting"}
UNSTATED = "_Not stated: write it in the spec's `card.{field}`._"


def build_card(run: Run, completion: dict[str, Any] | None = None) -> str:
    """The card's markdown: front matter, then one section per part of Mitchell et al. `completion`: the run's
    COMPLETE summary, when the card is written before that marker."""
    spec, meta = run.read_spec(), run.read_meta()
    result = run.read_eval() or {}
    audit = _read_json(run.path / "audit" / "audit.json")
    profile = _read_json(run.path / "profile" / "profile.json")
    checks = _explanation_checks(run.path)
    lines = ["---", _front_matter(spec, meta, result).strip(), "---", "",
             f"# Model card: {spec.name}", "", spec.description or "", ""]
    sections = {
        "Model Details": _details(run, spec, meta, completion or run.completion() or {}),
        "Intended Use": [_stated(spec.card.intended_use, "intended_use"), "",
                         f"**Out of scope:** {_stated(spec.card.out_of_scope, 'out_of_scope')}"],
        "Factors": _factors(audit, profile),
        "Metrics": _metrics(result, meta),
        "Evaluation Data": [f"The test split of `{spec.data.source}`: {meta.get('sizes', {}).get('test', '?')} "
                            f"examples, held out from training and model selection."
                            if result.get("data") == "test split" else "No test evaluation recorded."],
        "Training Data": _training_data(spec, meta),
        "Quantitative Analyses": _analyses(audit),
        "Ethical Considerations": _ethics(spec, audit),
        "Caveats and Recommendations": _caveats(spec, profile, checks),
    }
    for title, body in sections.items():
        lines += [f"## {title}", "", *body, ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- the parts


def _front_matter(spec: Any, meta: dict[str, Any], result: dict[str, Any]) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    task = HUB_TASKS.get(spec.task, spec.task.replace("_", "-"))
    source = str(spec.data.source)
    metrics = {k: v for k, v in result.get("metrics", {}).items() if isinstance(v, int | float)}
    base = _base_model(spec)
    return ModelCardData(
        library_name="dlforge", tags=["dlforge", "pytorch", task, str(meta.get("model", ""))],
        datasets=[source], metrics=sorted(metrics), base_model=base, model_name=spec.name,
        license=spec.card.license,
        eval_results=[EvalResult(task_type=task, dataset_type=source, dataset_name=Path(source).name or source,
                                 dataset_split="test", metric_type=name, metric_value=round(float(value), 6),
                                 metric_name=f"test {name}") for name, value in metrics.items()] or None,
    ).to_yaml()


def _base_model(spec: Any) -> str | None:
    """A hub id where the weights started from one (`hf:<id>` models, `hf-hub:` weights); local folders are no
    hub id."""
    name, pretrained = spec.model.name, spec.model.pretrained
    if name.startswith("hf:") and not Path(name[3:]).exists() and name != "hf:default":
        return name[3:]
    if name == "hf:default":
        return "sentence-transformers/all-MiniLM-L6-v2"
    if pretrained and pretrained.startswith("hf-hub:"):
        return pretrained.removeprefix("hf-hub:")
    return None


def _details(run: Run, spec: Any, meta: dict[str, Any], complete: dict[str, Any]) -> list[str]:
    epochs, best = (meta.get(k, complete.get(k, "?")) for k in ("epochs", "best_epoch"))
    rows = [("Task", spec.task), ("Architecture", f"`{meta.get('model')}` {json.dumps(meta.get('model_kwargs', {}))}"),
            ("Weights started from", spec.model.pretrained or _base_model(spec) or "random initialisation"),
            ("Trained", f"{epochs} epochs (best {best}), on {meta.get('device', '?')} x {meta.get('world_size', 1)}"),
            ("Weights", f"`model.safetensors`, SHA-256 `{run.weights_digest()[:12]}`"),
            ("Software", ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())),
            ("Authors", spec.card.authors or "not stated"), ("License", spec.card.license or "not stated"),
            ("Card written", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"))]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _factors(audit: dict[str, Any] | None, profile: dict[str, Any] | None) -> list[str]:
    lines = []
    if audit:
        groups = ", ".join(f"`{c}` ({len(audit['data']['groups'][c])} groups)" for c in audit["sensitive"])
        lines.append(f"Performance is reported per group of {groups} (see Quantitative Analyses).")
    else:
        lines.append("No group has been audited yet: `dlforge audit RUN --sensitive COLUMN`.")
    if profile:
        inputs = [c for c in profile["columns"] if not c.startswith(("pc_", "prediction_"))]
        lines += ["", f"Input conditions tracked for drift: {', '.join(f'`{c}`' for c in inputs)}."]
    return lines


def _metrics(result: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    metrics = {k: v for k, v in result.get("metrics", {}).items() if isinstance(v, int | float)}
    if not metrics:
        return ["No test metrics recorded."]
    lines = ["| metric | test value |", "|---|---|", *(f"| {k} | {v:.4g} |" for k, v in metrics.items())]
    if "temperature" in meta:
        lines += ["", f"Confidences are temperature-scaled (T = {meta['temperature']:.3g}, fit on the validation "
                      "set), so their mean estimates accuracy on unlabelled data."]
    return lines


def _training_data(spec: Any, meta: dict[str, Any]) -> list[str]:
    sizes = meta.get("sizes", {})
    split = " / ".join(f"{k} {v}" for k, v in sizes.items())
    lines = [f"Source: `{spec.data.source}`; examples: {split or 'not recorded'}."]
    counts = {k: v for k, v in (meta.get("data") or {}).items() if isinstance(v, int | float) and v}
    if counts:
        lines.append("Data handling: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()) + ".")
    if meta.get("skipped"):
        lines.append(f"Unreadable inputs skipped: {len(meta['skipped'])}.")
    if spec.train.fairness.reweigh:
        lines.append(f"Reweighed (Kamiran-Calders) by {', '.join(spec.train.fairness.reweigh)} and the label.")
        weights = (meta.get("fairness") or {}).get("reweigh")
        if weights:
            lines[-1] += (f" Training examples were drawn in proportion to weights from {weights['min']:.3g} to "
                          f"{weights['max']:.3g} (effective sample size {weights['effective_size']:.0f} of "
                          f"{weights['rows']}).")
    return lines


def _analyses(audit: dict[str, Any] | None) -> list[str]:
    if not audit:
        return ["Not audited yet."]
    boot = audit.get("bootstrap", {"ci": [0.025, 0.975]})
    spread = f"{boot['ci'][1] - boot['ci'][0]:.0%} bootstrap intervals" if boot else "no intervals"
    lines = [f"From `dlforge audit` on `{audit['data_source']}` ({audit['rows']} rows), positive class "
             f"`{audit['positive']}`; {spread}."]
    if audit.get("decisions"):
        lines[-1] += f" Decisions: {audit['decisions']}."
    for column, model in audit["model"].items():
        lines += ["", f"**{column}**", "", "| group | n | accuracy | selection rate | TPR | FPR |",
                  "|---|---|---|---|---|---|"]
        for group, row in model["by_group"].items():
            lines.append(f"| {group} | {row['count']} | " + " | ".join(
                _interval(row[m]) for m in ("accuracy", "selection_rate", "true_positive_rate",
                                            "false_positive_rate")) + " |")
        s = model["summary"]
        lines += ["", f"Demographic-parity difference {s['demographic_parity_difference']:.3f}, ratio "
                      f"{s['demographic_parity_ratio']:.3f}; equalized-odds difference "
                      f"{s['equalized_odds_difference']:.3f}."]
    m = audit.get("mitigation")
    if m:
        before, after = m["rows"]
        lines += ["", f"Group thresholds by `{m['column']}` (fairlearn ThresholdOptimizer, {m['constraint']}), "
                      f"measured on {m['eval_rows']} rows they were not fitted on: demographic-parity difference "
                      f"{before['demographic_parity_difference']:.3f} -> {after['demographic_parity_difference']:.3f}, "
                      f"accuracy {before['accuracy']:.4f} -> {after['accuracy']:.4f}."]
    return lines


def _interval(entry: dict[str, Any]) -> str:
    """'value [low, high]' (without an interval where the audit drew none; n/a where there is no value)."""
    if entry.get("value") is None:
        return "n/a"
    if entry.get("low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def _ethics(spec: Any, audit: dict[str, Any] | None) -> list[str]:
    lines = [_stated(spec.card.ethical_considerations, "ethical_considerations")]
    for column, model in (audit or {}).get("model", {}).items():
        ratio = model["summary"]["demographic_parity_ratio"]
        if ratio < 0.8:
            lines += ["", f"**Flag:** by `{column}`, the demographic-parity ratio is {ratio:.2f}, below the "
                          "four-fifths rule (0.8)."]
    for column, proxies in (audit or {}).get("data", {}).get("proxies", {}).items():
        strong = [p["feature"] for p in proxies if p["auc"] >= 0.7]
        if strong:
            lines += ["", f"Features that predict `{column}` (ROC-AUC >= 0.7), possible proxies: "
                          f"{', '.join(f'`{f}`' for f in strong)}."]
    return lines


def _caveats(spec: Any, profile: dict[str, Any] | None, checks: list[dict[str, Any]]) -> list[str]:
    lines = [_stated(spec.card.caveats, "caveats"), ""]
    if profile:
        lines.append(f"A drift reference of {profile['rows']} test examples is kept in `profile/`: check new data "
                     "with `dlforge monitor RUN --data NEW`, or serve with `--set serve.monitor.window=N`.")
    else:
        lines.append("No drift reference: `dlforge monitor profile RUN` writes one.")
    if checks:
        lines += ["", "Explanation trust checks (`dlforge explain`):", ""]
        lines += [f"- {c['method']}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in c.items() if k != "method") for c in checks]
    return lines


# ---------------------------------------------------------------- helpers


def _stated(text: str, field: str) -> str:
    return text.strip() or UNSTATED.format(field=field)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _explanation_checks(run_dir: Path) -> list[dict[str, Any]]:
    """The trust checks of the run's latest explanations per method (`explanations/checks.json`), if any."""
    return (_read_json(run_dir / "explanations" / "checks.json") or {}).get("checks", [])
