"""What a new user meets first in report.html: a many-layer, one-epoch run (the tiny yolo_n detector) reads well."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from torch import nn

import dlforge
from dlforge.plots import curves_figure, grad_blocks
from tests.browser import CHROMIUM, open_page

# what the page shows: every figure (alt, natural height, whether it is shown, inside which <details>), the
# <details>, every table's rows, and the visible text
LAYOUT = """() => ({
  figures: [...document.images].map(i => ({alt: i.alt, height: i.naturalHeight,
      shown: i.checkVisibility(), folded: i.closest('details')?.querySelector('summary').textContent})),
  details: [...document.querySelectorAll('details')].map(d => ({summary: d.querySelector('summary').textContent,
      open: d.open})),
  tables: [...document.querySelectorAll('table')].map(t => [...t.rows].map(r => [...r.cells].map(c => c.textContent))),
  text: document.body.innerText})"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make test` (Debian package)")
def test_many_layer_one_epoch_report(tiny_runs: Callable[[str], Path]) -> None:
    path = tiny_runs("object_detection")  # yolo_n: 120 weights; one epoch
    history = dlforge.Run(path).read_metrics()
    assert len(history) == 1
    seen = open_page(path / "report.html", evaluate=LAYOUT)
    page = seen["evaluated"]
    assert seen["errors"] == []
    assert seen["images"] and all(complete and width > 0 for _, complete, width in seen["images"]), seen["images"]

    # the gradient flow: a summary by block on the page, the per-layer heatmap folded under it
    weights = [n for n in history[0]["grad_norm"] if not n.endswith(".bias")]
    assert len(weights) == 120 and len(grad_blocks(weights)) <= 20
    figures = {f["alt"].split(" (")[0]: f for f in page["figures"]}
    summary, full = figures["Gradient flow by block"], figures["Gradient flow per layer"]
    assert summary["folded"] is None and summary["shown"] and summary["height"] < 720  # within a screen
    assert full["folded"] == "Gradient flow per layer (120 layers)" and not full["shown"]
    assert full["height"] > 3 * summary["height"]
    assert {"summary": "Gradient flow per layer (120 layers)", "open": False} in page["details"]

    # the versions, a table of package and version (folded too), not a JSON string
    versions = next(rows for rows in page["tables"] if rows[0] == ["package", "version"])
    assert ["torch", version("torch")] in versions
    source = (path / "report.html").read_text()
    assert "&quot;torch&quot;" not in source and '"torch":' not in source

    assert figures["Training curves"]["alt"] == "Training curves (one epoch: a single point per curve)"

    # the stride-32 box branch saw (almost) no large object in one epoch: unused so far, not vanishing
    unused = history[0]["grad_unused"]
    assert unused and all(n.startswith("head.box.2.") for n in unused)
    assert history[0]["grad_warnings"] == []
    assert "No layer's gradient vanished or exploded." in page["text"]
    assert f"Unused so far ({len(unused)};" in page["text"] and "head.box.2.2.weight" in page["text"]


def test_grad_blocks_merge_neighbours_when_the_top_level_is_too_many() -> None:
    names = [n for n, _ in nn.Sequential(*(nn.Linear(2, 2) for _ in range(45))).named_parameters()
             if n.endswith("weight")]
    blocks = grad_blocks(names)
    assert len(blocks) == 20
    assert [n for block in blocks.values() for n in block] == names  # each once, in order
    assert list(blocks)[:2] == ["0 … 2", "3 … 5"]
    # a model that fits keeps one row per top-level module, or deeper: `a.x`, `a.y`, `b`
    assert grad_blocks(["a.x.0.weight", "a.x.1.weight", "a.y.weight", "b.weight"], max_rows=3) == {
        "a.x": ["a.x.0.weight", "a.x.1.weight"], "a.y": ["a.y.weight"], "b": ["b.weight"]}


def test_one_epoch_curves_get_axes_from_zero() -> None:
    point = {"epoch": 1, "train/loss": 50.7, "val/loss": 48.2, "val/accuracy": 0.83}
    fig = curves_figure([point])
    losses, metrics = fig.axes
    # matplotlib's own limits for one point: a few per cent around it, which reads as a swing
    default = plt.figure().gca()
    default.plot([1], [0.83], marker="o")
    low, high = default.get_ylim()
    assert 0.75 < low < 0.83 < high < 0.9
    low, high = metrics.get_ylim()
    assert low <= 0 and high >= 1
    low, high = losses.get_ylim()
    assert low <= 0 and 50.7 < high < 60
    assert metrics.get_xlim() == (0, 2)
    # several epochs keep matplotlib's fit to the data
    trend = curves_figure([{**point, "epoch": e, "val/accuracy": a} for e, a in ((1, 0.90), (2, 0.95), (3, 0.97))])
    assert trend.axes[1].get_ylim()[0] > 0.85
    plt.close("all")
