"""Self-contained HTML pages: sections, inlined figures, tables. Reports, audits, drift and explanation pages are
all built from these."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def details(summary: str, body: str) -> str:
    """`body` folded under a one-line `summary` the reader clicks to open."""
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>" if body else ""


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
.muted{color:#777} summary{cursor:pointer;color:#555;margin:.4em 0}
"""


def render(title: str, subtitle: str, sections: list[Section]) -> str:
    toc = "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections))
    body = "".join(f'<h2 id="s{i}">{html.escape(s.title)}</h2>{s.body}' for i, s in enumerate(sections))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="muted">{html.escape(subtitle)}</p><ul>{toc}</ul>{body}</body></html>')
