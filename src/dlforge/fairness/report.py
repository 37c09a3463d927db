"""audit.html: the audit as one self-contained page. Per sensitive column, bars per group with their bootstrap
intervals as whiskers (matplotlib, inlined), the tables behind them, and the before/after table of a mitigation."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from dlforge._io import atomic_write_text
from dlforge.pages import Section, figure, render, table

PANELS = (("accuracy", "accuracy"), ("selection_rate", "selection rate"), ("true_positive_rate", "TPR"),
          ("false_positive_rate", "FPR"), ("mean_probability", "mean P(positive)"))


def write_html(result: dict[str, Any], folder: Path) -> Path:
    for old in folder.glob("*.png"):  # pictures of an earlier audit (other columns)
        old.unlink()
    sections = [Section("Summary", _summary(result))]
    for column in result["sensitive"]:
        picture = group_bars(result["model"][column], column, folder / f"groups_{_safe(column)}.png")
        sections.append(Section(f"By {column}", figure(picture, f"Per group of {column}: bars are the audited "
                                                                "values, whiskers their bootstrap intervals; grey: "
                                                                "too small to compare")
                                + _model_table(result["model"][column]) + _data_tables(result, column)))
    if "mitigation" in result:
        sections.append(Section("Mitigation", _mitigation(result["mitigation"], folder)))
    page = render(f"Fairness audit: {result['run']}", f"{result['rows']} rows of {result['data_source']} · positive "
                  f"class {result['positive']} · decisions {result['decisions']}", sections)
    return atomic_write_text(folder / "audit.html", page)


def group_bars(model: dict[str, Any], column: str, path: Path) -> Path:
    """One panel per metric: a horizontal bar per group, the interval as a whisker, the overall value dashed."""
    from dlforge import plots  # matplotlib with the Agg backend

    groups = list(model["by_group"])
    fig, axes = plots.plt.subplots(1, len(PANELS), figsize=(3.2 * len(PANELS), 0.45 * len(groups) + 1.4),
                                   sharey=True)
    for ax, (metric, title) in zip(axes, PANELS, strict=True):
        rows = [model["by_group"][g][metric] for g in groups]
        values = [r["value"] if r["value"] is not None else 0.0 for r in rows]
        err = [[max(0.0, v - (r["low"] if r["low"] is not None else v)) for v, r in zip(values, rows, strict=True)],
               [max(0.0, (r["high"] if r["high"] is not None else v) - v) for v, r in zip(values, rows, strict=True)]]
        colors = ["#bbbbbb" if model["by_group"][g]["small"] else "#4c72b0" for g in groups]
        ax.barh(range(len(groups)), values, xerr=err, color=colors, capsize=3, error_kw={"lw": 1})
        overall = model["overall"][metric]["value"]
        if overall is not None:
            ax.axvline(overall, color="#333333", ls="--", lw=1)
        if metric == "mean_probability":  # calibration: the observed positive rate beside the predicted one
            observed = [model["by_group"][g]["positive_rate"]["value"] for g in groups]
            ax.scatter(observed, range(len(groups)), color="#dd8452", zorder=3, label="observed rate")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(groups)), groups, fontsize=8)
    axes[0].set_ylabel(column)
    return plots.save(fig, path)


def _summary(result: dict[str, Any]) -> str:
    rows = []
    for column in result["sensitive"]:
        s = result["model"][column]["summary"]
        flag = "below 0.8 (four-fifths rule)" if s["four_fifths_flag"] else "ok"
        rows.append([column, f"{s['demographic_parity_difference']:.3f}", f"{s['demographic_parity_ratio']:.3f}",
                     flag, f"{s['equalized_odds_difference']:.3f}", ", ".join(s["groups_compared"])])
    boot = result["bootstrap"]
    note = (f"<p>Intervals: {boot['ci'][0]:.1%} to {boot['ci'][1]:.1%} quantiles of {boot['n_boot']} bootstrap "
            "resamples (fairlearn MetricFrame).</p>" if boot else "<p>No bootstrap intervals (n_boot 0).</p>")
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in result["warnings"])
    return (table(["column", "DP difference", "DP ratio", "four-fifths", "EO difference", "groups compared"], rows)
            + note + (f"<p>Warnings:</p><ul>{warnings}</ul>" if warnings else ""))


def _model_table(model: dict[str, Any]) -> str:
    metrics = ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate", "mean_probability",
               "positive_rate", "brier_score")
    rows = [[g + (" (small)" if r["small"] else ""), r["count"], *(_ci(r[m]) for m in metrics)]
            for g, r in model["by_group"].items()]
    rows.append(["overall", model["overall"]["count"], *(_ci(model["overall"][m]) for m in metrics)])
    return table(["group", "n", "accuracy", "selection rate", "TPR", "FPR", "mean P(positive)", "observed rate",
                  "Brier"], rows)


def _data_tables(result: dict[str, Any], column: str) -> str:
    groups = result["data"]["groups"][column]
    rows = [[g, r["count"], f"{r['share']:.3f}", f"{r['base_rate']:.3f}",
             ", ".join(f"{c} {v:.1%}" for c, v in sorted(r.get("missing", {}).items(), key=lambda x: -x[1])[:5])]
            for g, r in groups.items()]
    proxy = [[p["feature"], f"{p['auc']:.3f}", "possible proxy" if p["auc"] >= 0.7 else ""]
             for p in result["data"]["proxies"][column]]
    skipped = result["data"]["proxies_skipped"][column]
    return (f"<h3>Data by {html.escape(column)}</h3>"
            + table(["group", "rows", "share", f"base rate ({result['positive']})", "most missing"], rows)
            + f"<h3>Proxies of {html.escape(column)}</h3><p>Cross-validated ROC-AUC of a depth-3 tree predicting "
            f"{html.escape(column)} from one column alone.</p>" + table(["column", "ROC-AUC", ""], proxy)
            + (f"<p class=muted>Not tested (free text or identifiers): {html.escape(', '.join(skipped))}</p>"
               if skipped else ""))


def _mitigation(m: dict[str, Any], folder: Path) -> str:
    from dlforge import plots

    groups = list(m["rows"][0]["selection_rate"])
    fig, ax = plots.plt.subplots(figsize=(6, 0.5 * len(groups) + 1.5))
    for i, row in enumerate(m["rows"]):
        ax.barh([j + 0.38 * i for j in range(len(groups))], [row["selection_rate"][g] for g in groups], height=0.38,
                label=row["name"])
    ax.set_yticks([j + 0.19 for j in range(len(groups))], groups)
    ax.set_xlabel("selection rate")
    ax.legend(fontsize=8)
    picture = plots.save(fig, folder / "mitigation.png")
    rows = [[r["name"], f"{r['accuracy']:.4f}", f"{r['demographic_parity_difference']:.3f}",
             f"{r['demographic_parity_ratio']:.3f}", f"{r['equalized_odds_difference']:.3f}"] for r in m["rows"]]
    return (f"<p>fairlearn ThresholdOptimizer ({html.escape(m['constraint'])}, objective accuracy) by "
            f"{html.escape(m['column'])}, fitted on {m['fit_rows']} rows and measured on the other {m['eval_rows']}; "
            f"stored in the run as {html.escape(m['thresholds'])} and applied by the Predictor and the server.</p>"
            + table(["decisions", "accuracy", "DP difference", "DP ratio", "EO difference"], rows)
            + f"<p>Accuracy cost: {m['accuracy_cost']:.4f}.</p>" + figure(picture, "Selection rate per group, "
                                                                             "before and after"))


def _ci(entry: dict[str, Any]) -> str:
    if entry["value"] is None:
        return "n/a"
    if entry["low"] is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
