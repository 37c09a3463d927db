"""Figures as PNG files (matplotlib, Agg backend), each written atomically."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from dlforge._io import atomic_write_bytes


def save(fig: plt.Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def training_curves(history: list[dict], path: Path) -> Path:
    return save(curves_figure(history), path)


def curves_figure(history: list[dict]) -> plt.Figure:
    """Losses on one axis, every other logged metric on a second panel, per epoch. A single epoch, or a flat curve,
    gets an axis from zero (`flat_limits`), not matplotlib's ±4% around the value, which reads as a swing."""
    epochs = [row["epoch"] for row in history]
    keys = sorted({k for row in history for k, v in row.items() if "/" in k and isinstance(v, int | float)})
    losses = [k for k in keys if k.endswith("loss")]
    others = [k for k in keys if k not in losses]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, group, title in ((axes[0], losses, "loss"), (axes[1], others, "metrics")):
        values = np.array([[row.get(k, np.nan) for row in history] for k in group], dtype=float)
        for k, curve in zip(group, values, strict=True):
            ax.plot(epochs, curve, marker="o", ms=3 if len(epochs) > 1 else 7, label=k)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        finite = values[np.isfinite(values)]
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        if finite.size and (len(epochs) == 1 or finite.min() == finite.max()):
            ax.set_ylim(*flat_limits(float(finite.min()), float(finite.max())))
        if group:
            ax.legend(fontsize=8)
    return fig


def flat_limits(low: float, high: float) -> tuple[float, float]:
    """y-limits for values with no trend to show: a score's whole range [0, 1] for values in it (accuracy, mAP),
    else zero to the values; a twentieth of the largest magnitude as margin."""
    if low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    margin = 0.05 * (max(abs(low), abs(high)) or 1.0)
    return min(low, 0.0) - margin, max(high, 0.0) + margin


def grad_blocks(names: Sequence[str], max_rows: int = 20) -> dict[str, list[str]]:
    """Parameter names grouped into blocks by module prefix: the deepest prefix (`backbone.stage2`, `head.box`) that
    keeps at most `max_rows` blocks. When even the top-level modules are more, consecutive ones are merged."""
    def prefix(name: str, depth: int) -> str:
        return ".".join((name.split(".")[:-1] or [name])[:depth])

    best: dict[str, list[str]] = {}
    for depth in range(1, max(n.count(".") for n in names) + 2):
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(prefix(name, depth), []).append(name)
        if len(groups) > max_rows:
            if best:
                break
            keys = list(groups)  # the top level alone is too many: merge runs of neighbours
            runs = np.array_split(np.arange(len(keys)), max_rows)
            return {keys[r[0]] if len(r) == 1 else f"{keys[r[0]]} … {keys[r[-1]]}":
                    [n for i in r for n in groups[keys[i]]] for r in runs}
        best = groups
    return best


def grad_flow(history: list[dict], path: Path, max_rows: int | None = None) -> Path | None:
    """log10 of each weight's mean gradient norm, per layer (rows) and epoch (columns). With `max_rows`, one row per
    block of layers (`grad_blocks`): the norm of the block's gradient, the root of its layers' summed squares."""
    rows = [row for row in history if row.get("grad_norm")]
    if not rows:
        return None
    # every weight of every epoch, the last epoch's order first (a frozen backbone joins the later epochs)
    names = list(dict.fromkeys(n for row in reversed(rows) for n in row["grad_norm"] if not n.endswith(".bias")))
    values = np.array([[row["grad_norm"].get(n, np.nan) for row in rows] for n in names], dtype=float)
    labels, what = names, "layer"
    if max_rows:
        blocks = grad_blocks(names, max_rows)
        position = {n: i for i, n in enumerate(names)}
        members = [values[[position[n] for n in block]] for block in blocks.values()]
        values = np.array([np.where(np.isnan(m).all(0), np.nan, np.sqrt(np.nansum(m**2, 0))) for m in members])
        labels, what = [f"{b} ({len(block)})" for b, block in blocks.items()], "block"
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(rows) + 3), max(3, 0.22 * len(labels) + 1)))
    image = ax.imshow(np.log10(np.maximum(values, 1e-12)), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xticks(range(len(rows)), [row["epoch"] for row in rows], fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_title(f"gradient flow: log10 mean ‖grad‖ per {what}")
    fig.colorbar(image, ax=ax)
    return save(fig, path)


def confusion_matrix(cm: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * k, 1 + 0.45 * k))
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=90 if k > 10 else 0, fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return save(fig, path)


def reliability_before_after(calibration: dict, path: Path) -> Path:
    """Reliability diagrams of the same predictions before (T = 1) and after temperature scaling, side by side,
    with the confidence histogram under each. `calibration`: {"temperature", "before", "after"}, each side with
    "reliability" bins (lo, hi, n, confidence, accuracy), "ece" and "accuracy"."""
    fig, axes = plt.subplots(2, 2, figsize=(8.5, 5), height_ratios=[3, 1], sharex=True, sharey="row")
    for col, when in enumerate(("before", "after")):
        side, ax, hist = calibration[when], axes[0, col], axes[1, col]
        bins = side["reliability"]
        used = [b for b in bins if b["n"]]
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
        ax.bar([(b["lo"] + b["hi"]) / 2 for b in used], [b["accuracy"] for b in used],
               width=[b["hi"] - b["lo"] for b in used], edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], "o-", color="C3", ms=3,
                label="mean confidence")
        temperature = 1.0 if when == "before" else calibration["temperature"]
        ax.set_title(f"{when} temperature scaling (T = {temperature:.3g}): ECE {side['ece']:.3f}", fontsize=10)
        hist.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["n"] for b in bins], width=1 / len(bins),
                 edgecolor="black")
        hist.set_xlabel("confidence")
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("count")
    axes[0, 0].legend(fontsize=8, loc="upper left")
    return save(fig, path)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], alert: Sequence[bool], path: Path,
               cols: int = 8, size: float = 1.5) -> Path:
    """Images (H, W, 3 uint8) in a grid, `size` inches each; titles of `alert` images in red."""
    rows = max(1, math.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, (size + 0.25) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title, bad in zip(axes.flat, images, titles, alert, strict=False):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=7, color="red" if bad else "black")
    return save(fig, path)


def palette(k: int) -> list[tuple[int, int, int]]:
    """k distinct RGB colours (tab10/tab20), one per class."""
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
    return [tuple(int(255 * c) for c in cmap(i % cmap.N)[:3]) for i in range(k)]


def pr_curves(curves: dict[str, list[float]], path: Path) -> Path:
    """Precision against recall (101 COCO recall points) per class, AP in the legend."""
    fig, ax = plt.subplots(figsize=(5, 4))
    recall = np.linspace(0, 1, 101)
    for name, precision in curves.items():
        ax.plot(recall, precision, label=f"{name} (AP {np.mean(precision):.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall at IoU 0.5")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return save(fig, path)


def iou_bars(classes: Sequence[str], iou: Sequence[float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(classes) + 2), 3.2))
    ax.bar(range(len(classes)), iou, color=[np.array(c) / 255 for c in palette(len(classes))], edgecolor="black")
    for i, v in enumerate(iou):
        ax.text(i, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 6 else 0, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("IoU")
    ax.set_title(f"IoU per class (mean {np.mean(iou):.3f})")
    return save(fig, path)


def mask_rows(images: Sequence[np.ndarray], truth: Sequence[np.ndarray], predicted: Sequence[np.ndarray],
              path: Path) -> Path:
    """One row per image: the image, its true mask and the predicted mask, side by side."""
    rows = max(1, len(images))
    fig, axes = plt.subplots(rows, 3, figsize=(6.6, 2.2 * rows), squeeze=False)
    for row, pictures in zip(axes, zip(images, truth, predicted, strict=True), strict=False):
        for ax, picture, title in zip(row, pictures, ("image", "true mask", "predicted mask"), strict=True):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    return save(fig, path)


def backtest(panels: Sequence[dict], method: str, path: Path) -> Path:
    """One row per series: recent history, then each fold's truth, the model's median and interval, and the
    baselines' medians (dashed)."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), squeeze=False)
    styles = {"seasonal_naive": ("tab:orange", "seasonal naive"), "ets": ("tab:green", "ETS")}
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        ax.plot(panel["history"].index, panel["history"].to_numpy(), color="0.45", lw=1, label="history")
        for i, fold in enumerate(panel["folds"]):
            first = i == 0
            q = fold["quantiles"]  # (H, Q)
            ax.fill_between(fold["index"], q[:, 0], q[:, -1], color="tab:blue", alpha=0.2, lw=0,
                            label="model interval" if first else None)
            ax.plot(fold["index"], q[:, panel["median"]], color="tab:blue", lw=1.4, label=method if first else None)
            ax.plot(fold["index"], fold["truth"], color="black", lw=1, label="truth" if first else None)
            for name, median in fold["baselines"].items():
                colour, label = styles[name]
                ax.plot(fold["index"], median, color=colour, lw=1, ls="--", label=label if first else None)
            ax.axvline(fold["index"][0], color="0.8", lw=0.8)
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=6, loc="upper left")
    fig.tight_layout()
    return save(fig, path)


def forecast(panels: Sequence[dict], path: Path) -> Path:
    """One row per series: recent history, the median forecast and the band between the outer quantiles."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        ax.plot(panel["history"].index, panel["history"].to_numpy(), color="0.3", lw=1, label="history")
        q, index = panel["quantiles"], panel["index"]  # (H, Q), (H,)
        ax.fill_between(index, q[:, 0], q[:, -1], color="tab:blue", alpha=0.25, lw=0, label=panel["band"])
        ax.plot(index, q[:, panel["median"]], color="tab:blue", lw=1.5, label="median forecast")
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save(fig, path)


def text_examples(rows: Sequence[tuple[str, str, float, str]], path: Path) -> Path:
    """The most confident mistakes: (text, predicted, confidence, true) per row, the text wrapped."""
    import textwrap

    fig, ax = plt.subplots(figsize=(10, 0.75 + 0.62 * max(len(rows), 1)))
    ax.axis("off")
    if not rows:
        ax.text(0, 0.5, "no mistakes on the test set", fontsize=11)
    for i, (text, predicted, confidence, true) in enumerate(rows):
        y = 1 - (i + 0.5) / len(rows)
        snippet = textwrap.shorten(text, 230, placeholder=" …")
        ax.text(0, y, "\n".join(textwrap.wrap(snippet, 115)), fontsize=8, va="center")
        ax.text(1.0, y, f"{predicted} ({confidence:.2f})\ntrue {true}", fontsize=8, va="center", ha="right",
                color="#c0392b")
    return save(fig, path)


def drift_histograms(reference: dict[str, np.ndarray], current: dict[str, np.ndarray], path: Path) -> Path:
    """One panel per column: reference and current histograms on shared bins."""
    names = list(reference)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        both = np.concatenate([reference[name], current[name]])
        edges = np.histogram_bin_edges(both[np.isfinite(both)], bins=30)
        ax.hist(reference[name], edges, density=True, alpha=0.55, label="reference")
        ax.hist(current[name], edges, density=True, alpha=0.55, label="current")
        ax.set_title(name, fontsize=10)
    axes.flat[0].legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return save(fig, path)


def embedding_scatter(reference: np.ndarray, current: np.ndarray, path: Path) -> Path:
    """(N, 2) reference and (M, 2) current points: the first two principal components of the embeddings."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(reference[:, 0], reference[:, 1], s=6, alpha=0.5, label="reference")
    ax.scatter(current[:, 0], current[:, 1], s=6, alpha=0.5, label="current")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=8)
    return save(fig, path)


def distribution_bars(reference: dict[str, float], current: dict[str, float], path: Path) -> Path:
    """Shares of each category in the reference and the current data, side by side."""
    keys = sorted(set(reference) | set(current), key=str)
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(keys) + 2), 3.2))
    ax.bar(x - 0.2, [reference.get(k, 0.0) for k in keys], 0.4, label="reference")
    ax.bar(x + 0.2, [current.get(k, 0.0) for k in keys], 0.4, label="current")
    ax.set_xticks(x, keys, rotation=45 if len(keys) > 8 else 0)
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    return save(fig, path)
