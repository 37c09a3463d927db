"""One self-contained report.html per run: every image inlined, no external resource.

Sections come from the run's task (`Task.report_sections`) and from the generic builders
below; later features (audit, drift, model card) add theirs through the same `Section` list.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlforge._io import atomic_write_text

if TYPE_CHECKING:
    from dlforge.run import Run
    from dlforge.spec import SpecBase


@dataclass
class Section:
    title: str
    body: str  # HTML


def figure(path: Path, caption: str) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0} td,th{border:1px solid #ddd;padding:3px 9px;text-align:left}
th{background:#f4f4f4} figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
img{max-width:100%} figcaption{font-size:12px;color:#555} pre{background:#f6f6f6;padding:1em;overflow:auto}
.muted{color:#777}
"""


def render(title: str, subtitle: str, sections: list[Section]) -> str:
    toc = "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections))
    body = "".join(f'<h2 id="s{i}">{html.escape(s.title)}</h2>{s.body}' for i, s in enumerate(sections))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="muted">{html.escape(subtitle)}</p><ul>{toc}</ul>{body}</body></html>')


def write_report(run: Run) -> Path:
    """Build report.html from what the run directory holds."""
    from dlforge.card import build_card
    from dlforge.registry import TASKS
    from dlforge.report import plots

    meta, history, spec = run.read_meta(), run.read_metrics(), run.read_spec()
    task = TASKS.get(spec.task)(spec)
    figures = run.path / "plots"
    status = run.status()
    sections = [Section("Summary", _summary(run, spec, meta, history, status))]
    if history:
        plots.training_curves(history, figures / "training_curves.png")
        flow = plots.grad_flow(history, figures / "grad_flow.png")
        warnings = [w for row in history for w in row.get("grad_warnings", [])]
        body = figure(figures / "training_curves.png", "Training curves")
        if flow:
            body += figure(flow, "Gradient flow (weights; darker = smaller gradients)")
        body += (f"<p>Gradient warnings: {len(warnings)}</p><ul>" +
                 "".join(f"<li>{html.escape(w)}</li>" for w in warnings[:20]) + "</ul>") if warnings else \
            "<p>No layer's gradient vanished or exploded.</p>"
        sections.append(Section("Training", body))
    sections += task.report_sections(run)
    from markdown_it import MarkdownIt  # rich's markdown parser

    card = build_card(run)
    atomic_write_text(run.path / "card.md", card)
    card = card.split("---", 2)[-1]  # the front matter is for the hub, not for reading
    card = "\n".join("#" + line if line.startswith("## ") else line  # its sections sit under the report's
                     for line in card.splitlines() if not line.startswith("# "))
    sections.append(Section("Model card", MarkdownIt("commonmark").enable("table").render(card)))
    sections.append(Section("Spec", f"<pre>{html.escape(run.spec_path.read_text())}</pre>"))
    page = render(f"dlforge run: {run.path.name}", f"task {spec.task} · model {meta.get('model')} · {status}",
                  sections)
    return atomic_write_text(run.path / "report.html", page)


def _summary(run: Run, spec: SpecBase, meta: dict, history: list[dict], status: str) -> str:
    complete = run.completion() or {}
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
    versions = json.dumps(meta.get("versions", {}))
    return table(["", ""], rows) + f'<p class="muted">versions: {html.escape(versions)}</p>'
