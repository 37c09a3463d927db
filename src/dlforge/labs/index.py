"""labs/index.html: one page over every finished lab in a folder (those with a results.json), each with its
summary (rendered from summary.md), its headline numbers, and its figures, linked by relative paths so the page
stays small and opens from the folder as it is."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from dlforge._io import atomic_write_text
from dlforge.pages import Section, render, table

IMAGE = (".png", ".jpg", ".jpeg", ".svg")


def finished_labs(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, results) of every lab folder under `root` that holds a results.json (a finished lab)."""
    found = []
    for path in sorted(root.glob("*/results.json")):
        try:
            found.append((path.parent, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError):
            continue  # being written, or broken: not a finished lab
    return found


def write_index(root: str | Path, descriptions: dict[str, str] | None = None,
                failed: dict[str, str] | None = None) -> Path:
    """Write `root`/index.html over the labs in `root`; `failed` (lab -> error) lists labs that did not finish."""
    from markdown_it import MarkdownIt

    root = Path(root)
    markdown = MarkdownIt("commonmark").enable("table")
    labs = finished_labs(root)
    descriptions = descriptions or {}
    rows = [[r.get("lab", folder.name), descriptions.get(r.get("lab", ""), ""), f"{r.get('time_s', 0):.0f} s",
             "quick" if r.get("quick") else "full"] for folder, r in labs]
    rows += [[name, f"failed: {error}", "", ""] for name, error in (failed or {}).items()]
    contents = table(["lab", "what it measures", "run time", "run"], rows)
    sections = [Section("Labs", contents)]
    for folder, results in labs:
        sections.append(Section(results.get("lab", folder.name), _lab_body(root, folder, results, markdown)))
    page = render("dlforge labs", f"{len(labs)} labs in {root.resolve()}", sections)
    return atomic_write_text(root / "index.html", page)


def _lab_body(root: Path, folder: Path, results: dict[str, Any], markdown: Any) -> str:
    rel = folder.relative_to(root).as_posix()
    links = [f'<a href="{html.escape(rel)}/{name}">{name}</a>' for name in ("summary.md", "results.json")
             if (folder / name).exists()]
    headline = results.get("headline") or {}
    head = table(["", ""], [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in headline.items()])
    summary = (folder / "summary.md").read_text() if (folder / "summary.md").exists() else ""
    summary = summary.split("\n", 1)[1] if summary.startswith("# ") else summary  # its title: the section's
    body = markdown.render("\n".join("#" + line if line.startswith("#") else line for line in summary.splitlines()))
    images = [f for f in results.get("files", []) if f.lower().endswith(IMAGE) and (folder / f).exists()]
    figures = "".join(f'<figure><a href="{html.escape(rel)}/{html.escape(f)}"><img alt="{html.escape(f)}" '
                      f'src="{html.escape(rel)}/{html.escape(f)}" style="max-width:520px"></a>'
                      f"<figcaption>{html.escape(f)}</figcaption></figure>" for f in images)
    when = "quick run" if results.get("quick") else "full run"
    return (f'<p class="muted">{when}, {results.get("time_s", 0):.0f} s · {" · ".join(links)}</p>' + head + figures
            + f"<details open><summary>summary.md</summary>{body}</details>")
