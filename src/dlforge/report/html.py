"""One self-contained report.html per run: every image inlined, no external resource.

Sections come from the run's task (`Reported.report_sections`) and from the generic builders
below; later features (audit, drift, model card) add theirs through the same `Section` list.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlforge._io import atomic_write_text
from dlforge.pages import Section, details, figure, render, table
from dlforge.tasks.capabilities import Reported

if TYPE_CHECKING:
    from dlforge.run import Run
    from dlforge.spec import SpecBase

BLOCK_ROWS = 20  # rows of the gradient-flow summary: the heatmap stays within a screen


def write_report(run: Run, completion: dict[str, Any] | None = None) -> Path:
    """Build report.html from what the run directory holds. `completion`: the summary of a run about to be marked
    complete (the pipeline writes the report before the COMPLETE marker, which stays the last file written)."""
    from dlforge import plots
    from dlforge.registry import TASKS
    from dlforge.report.card import build_card

    meta, history, spec = run.read_meta(), run.read_metrics(), run.read_spec()
    task = TASKS.get(spec.task)(spec)
    figures = run.path / "plots"
    complete = completion or run.completion()
    status = "complete" if complete else run.status()
    sections = [Section("Summary", _summary(spec, meta, history, status, complete or {}))]
    if history:
        plots.training_curves(history, figures / "training_curves.png")
        one = " (one epoch: a single point per curve)" if len(history) == 1 else ""
        body = figure(figures / "training_curves.png", "Training curves" + one) + _gradient_flow(history, figures)
        sections.append(Section("Training", body))
    if isinstance(task, Reported):
        sections += task.report_sections(run)
    sections += _sharpness(run)
    from markdown_it import MarkdownIt  # rich's markdown parser

    card = build_card(run, complete)
    atomic_write_text(run.path / "card.md", card)
    card = card.split("---", 2)[-1]  # the front matter is for the hub, not for reading
    card = "\n".join("#" + line if line.startswith("## ") else line  # its sections sit under the report's
                     for line in card.splitlines() if not line.startswith("# "))
    sections.append(Section("Model card", MarkdownIt("commonmark").enable("table").render(card)))
    sections.append(Section("Spec", f"<pre>{html.escape(run.spec_path.read_text())}</pre>"))
    page = render(f"dlforge run: {run.path.name}", f"task {spec.task} · model {meta.get('model')} · {status}",
                  sections)
    return atomic_write_text(run.path / "report.html", page)


def _gradient_flow(history: list[dict], figures: Path) -> str:
    """The gradient-flow heatmap by block of layers (a yolo_n has 120 weights: one row each would fill the screen),
    the full per-layer one folded under it, then the warnings and the layers the loss has not reached yet."""
    from dlforge import plots

    if layers := plots.grad_flow(history, figures / "grad_flow.png"):
        blocks = plots.grad_flow(history, figures / "grad_flow_blocks.png", max_rows=BLOCK_ROWS)
        count = len({n for row in history for n in row.get("grad_norm", {}) if not n.endswith(".bias")})
        body = (figure(blocks, "Gradient flow by block (weights; darker = smaller gradients)")
                + details(f"Gradient flow per layer ({count} layers)",
                          figure(layers, "Gradient flow per layer (weights; darker = smaller gradients)")))
    else:
        body = ""
    warnings = [w for row in history for w in row.get("grad_warnings", [])]
    body += (f"<p>Gradient warnings: {len(warnings)}</p><ul>" +
             "".join(f"<li>{html.escape(w)}</li>" for w in warnings[:20]) + "</ul>") if warnings else \
        "<p>No layer's gradient vanished or exploded.</p>"
    if unused := history[-1].get("grad_unused"):
        body += (f"<p>Unused so far ({len(unused)}; the loss's gradient does not reach them, so they are not "
                 f"vanishing): {html.escape(', '.join(unused[:20]))}{' …' if len(unused) > 20 else ''}</p>")
    return body


def _summary(spec: SpecBase, meta: dict, history: list[dict], status: str, complete: dict[str, Any]) -> str:
    rows = [["task", spec.task], ["model", meta.get("model")], ["status", status],
            ["labels", ", ".join(meta.get("classes", []))[:200]],
            ["examples (train / val / test)", " / ".join(str(v) for v in meta.get("sizes", {}).values())],
            ["epochs run", len(history)], ["device", meta.get("device", "")],
            ["data", spec.data.source]]
    if meta.get("skipped"):
        rows.append(["unreadable images skipped", len(meta["skipped"])])
    if "headline" in complete:
        rows.append([f"test {complete['headline']['name']}", f"{complete['headline']['value']:.4f}"])
    if meta.get("pretrained"):
        rows.append(["pretrained from", meta["pretrained"]["source"]])
    versions = list(meta.get("versions", {}).items())
    return table(["", ""], rows) + details(f"Versions ({len(versions)} packages)",
                                           table(["package", "version"], versions) if versions else "")


def _sharpness(run: Run) -> list[Section]:
    """The section `dlforge diagnose RUN --sharpness` adds to the report (from <run>/diagnostics/sharpness.json):
    the top Hessian eigenvalues of the training loss against 2/η for the run's final learning rate η."""
    path = run.path / "diagnostics" / "sharpness.json"
    if not path.exists():
        return []
    s = json.loads(path.read_text())
    rows = [["top Hessian eigenvalues", ", ".join(f"{v:.4g}" for v in s["eigenvalues"])],
            ["final learning rate η", f"{s['lr']:.3g} ({s['optimizer']}; peak {s['peak_lr']:.3g})"],
            [f"stability threshold, {s['threshold_rule']}", "∞" if s["threshold"] is None else f"{s['threshold']:.4g}"],
            ["λ_max / threshold (1 = at the edge)", f"{s['ratio']:.3g}"],
            ["measured on", f"{s['examples']} training examples, {s['mode']}"]]
    return [Section("Sharpness", f"<p>{html.escape(s['verdict'])}</p>" + table(["", ""], rows)
                    + figure(run.path / "plots" / "sharpness.png", "Sharpness: top Hessian eigenvalues against 2/η"))]
