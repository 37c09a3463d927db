"""Pictures of explanations, each written with its JSON beside it (atomically).

- images: the input, and the attributions over it (a diverging map for signed methods), as PNG;
- texts: the text with each token coloured by its attribution (red for, blue against), as HTML;
- anything else, by the shape of its units: a heatmap per 2-D part (a window's steps x features), bars for 0-D and
  1-D parts (a row's columns), as PNG;
- over many rows, `summary`: the mean |attribution| per labelled unit (the global picture of a table's features).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlforge._io import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dlforge.explain.explanation import Explanation


def picture(e: Explanation) -> tuple[str, bytes]:
    """(file suffix, content) of an explanation's picture."""
    if e.kind == "image":
        return "png", _image(e)
    if e.kind == "text":
        return "html", _text(e).encode()
    return "png", _panels(e)


def picture_json(e: Explanation) -> dict[str, str]:
    """The picture inside JSON: {"format": "png", "base64": ...} or {"format": "html", "html": ...}."""
    fmt, data = picture(e)
    return {"format": fmt, "html": data.decode()} if fmt == "html" else {"format": fmt,
                                                                          "base64": base64.b64encode(data).decode()}


def write(explanations: Sequence[Explanation], out_dir: Path, names: Sequence[str] | None = None) -> list[Path]:
    """<out>/<name>.<method>.png|html and <name>.<method>.json per explanation; returns the paths written."""
    written = []
    for i, e in enumerate(explanations):
        stem = f"{names[i] if names else f'item-{i}'}.{e.method}"
        fmt, data = picture(e)
        written.append(atomic_write_bytes(out_dir / f"{stem}.{fmt}", data))
        doc = {"input": names[i] if names else i, "picture": f"{stem}.{fmt}", **e.to_dict()}
        written.append(atomic_write_json(out_dir / f"{stem}.json", doc))
    return written


def summary(explanations: Sequence[Explanation]) -> dict[str, float]:
    """Mean |attribution| per labelled unit over the explanations (units without labels are left out)."""
    totals: dict[str, list[float]] = {}
    for e in explanations:
        for part, units in zip(e.parts, e.units, strict=True):
            values = np.atleast_1d(units)
            if part.labels and values.ndim == 1 and len(part.labels) == len(values):
                for label, v in zip(part.labels, values, strict=True):
                    totals.setdefault(label, []).append(abs(float(v)))
    return dict(sorted(((k, float(np.mean(v))) for k, v in totals.items()), key=lambda kv: -kv[1]))


def write_summary(explanations: Sequence[Explanation], out_dir: Path) -> list[Path]:
    """summary.png (bars of the mean |attribution| per unit) and summary.json, over all the explanations."""
    means = summary(explanations)
    if not means:
        return []
    plt = _plt()

    shown = list(means.items())[:25][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(shown) + 1.2))
    ax.barh([k for k, _ in shown], [v for _, v in shown], color="#4a7ab5")
    ax.set_xlabel("mean |attribution|")
    ax.set_title(f"{explanations[0].method}: {len(explanations)} inputs", fontsize=10)
    doc = {"method": explanations[0].method, "inputs": len(explanations), "mean_abs_attribution": means}
    return [atomic_write_bytes(out_dir / "summary.png", _png(fig)), atomic_write_json(out_dir / "summary.json", doc)]


def record_checks(explanations: Sequence[Explanation], run_dir: Path) -> Path:
    """`<run>/explanations/checks.json`: per method, the latest trust checks over its inputs (the model card reads
    them): how often deleting the top-attributed units first lowers the score faster than a random order, and
    Integrated Gradients' worst completeness error."""
    import json

    path = run_dir / "explanations" / "checks.json"
    kept = {c["method"]: c for c in (json.loads(path.read_text()).get("checks", []) if path.exists() else [])}
    deletion = [e.checks["deletion"] for e in explanations if "deletion" in e.checks]
    errors = [e.checks["completeness"]["relative_error"] for e in explanations
              if (e.checks.get("completeness") or {}).get("relative_error") is not None]
    entry = {"method": explanations[0].method, "inputs": len(explanations)}
    if deletion:
        entry["deletion_beats_random"] = float(np.mean([d["auc"] < d["random_auc"] for d in deletion]))
    if errors:
        entry["completeness_error_max"] = float(max(errors))
    kept[entry["method"]] = entry
    return atomic_write_json(path, {"checks": list(kept.values())})


# ---------------------------------------------------------------- pictures


def _image(e: Explanation) -> bytes:
    plt = _plt()
    import torch
    import torch.nn.functional as F

    from dlforge.data.images import to_uint8_tensor

    image = to_uint8_tensor(e.item, 3)  # (3, H, W)
    heat = F.interpolate(torch.as_tensor(np.asarray(e.units[0], np.float32))[None, None], size=image.shape[1:],
                         mode="bilinear", align_corners=False)[0, 0].numpy()  # to the image's own size
    pixels = image.permute(1, 2, 0).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    axes[0].imshow(pixels, interpolation="nearest")
    axes[1].imshow(pixels.mean(2), cmap="gray", interpolation="nearest")
    shown = axes[1].imshow(heat, alpha=0.6, interpolation="nearest", **_colours(heat))
    if "box" in e.target:  # a detection: the explained box
        x0, y0, x1, y1 = e.target["box"]
        for ax in axes:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    fig.suptitle(_title(e), fontsize=9)
    return _png(fig)


def _text(e: Explanation) -> str:
    from dlforge.pages import Section, render, table

    part, units = next(((p, u) for p, u in zip(e.parts, e.units, strict=True) if p.spans is not None),
                       (e.parts[0], e.units[0]))
    values = np.ravel(units)
    scale = float(np.abs(values).max()) or 1.0
    text = e.item.get("text") if isinstance(e.item, dict) else str(e.item)
    pieces, at = [], 0
    for i, v in enumerate(values):
        if part.spans is not None:
            a, b = part.spans[i]
            if a >= b:
                continue  # a special token
            pieces.append(html.escape(text[at:a]))
            word, at = text[a:b], b
        else:
            word = part.labels[i] + " " if part.labels else f"{i} "
        colour = "220,40,40" if v > 0 else "40,90,220"
        pieces.append(f'<span title="{v:.4g}" style="background:rgba({colour},{abs(v) / scale:.2f});'
                      f'padding:1px 2px;border-radius:3px">{html.escape(word)}</span>')
    if part.spans is not None:
        pieces.append(html.escape(text[at:]))
    body = (f'<p style="font-size:18px;line-height:2">{"".join(pieces)}</p><p class="muted">red: for the score, '
            "blue: against; darker: stronger</p>" + table(["check", "value"], _check_rows(e)))
    return render(f"explanation: {e.method}", _title(e), [Section("Tokens", body)])


def _panels(e: Explanation) -> bytes:
    """A heatmap per part with 2-D units (rows: its labels, e.g. features; columns: e.g. steps), and one bar chart of
    every unit of the parts with 0-D or 1-D units (e.g. a row's columns)."""
    plt = _plt()

    maps = [(p, np.asarray(u)) for p, u in zip(e.parts, e.units, strict=True) if np.ndim(u) == 2]
    bars = [(label, float(v)) for p, u in zip(e.parts, e.units, strict=True) if np.ndim(u) < 2
            for label, v in zip(p.labels or [f"{p.name}[{i}]" for i in range(np.size(u))], np.ravel(u), strict=False)]
    panels = len(maps) + bool(bars)
    widths = [max(2.0, 0.25 * u.shape[0]) for _, u in maps] + ([4.0] if bars else [])
    height = max(3.0, 0.3 * max([u.shape[1] for _, u in maps] + [len(bars[:25])]) + 1.5)
    fig, axes = plt.subplots(1, panels, figsize=(sum(widths) + 3, height), squeeze=False,
                             gridspec_kw={"width_ratios": widths}, layout="constrained")
    for ax, (part, u) in zip(axes[0], maps, strict=False):
        shown = ax.imshow(u.T, aspect="auto", interpolation="nearest", **_colours(u))
        ax.set_yticks(range(u.shape[1]), part.labels if part.labels and len(part.labels) == u.shape[1] else
                      range(u.shape[1]), fontsize=7)
        ax.set_xlabel("step")
        ax.set_title(part.name, fontsize=9)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    if bars:
        shown_bars = sorted(bars, key=lambda kv: abs(kv[1]), reverse=True)[:25][::-1]
        ax = axes[0][-1]
        ax.barh([k for k, _ in shown_bars], [v for _, v in shown_bars],
                color=["#c83232" if v > 0 else "#2f5fb3" for _, v in shown_bars])
        ax.axvline(0, color="#888", lw=0.8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("attribution")
    fig.suptitle(_title(e), fontsize=9)
    return _png(fig)


def _colours(values: np.ndarray) -> dict[str, Any]:
    """Signed attributions: blue-white-red around 0; non-negative ones (saliency, Grad-CAM): a sequential map."""
    top = float(np.abs(values).max()) or 1.0
    return {"cmap": "bwr", "vmin": -top, "vmax": top} if float(np.min(values)) < 0 else {"cmap": "inferno",
                                                                                         "vmin": 0, "vmax": top}


def _title(e: Explanation) -> str:
    about = ", ".join(f"{k} {v}" for k, v in e.target.items() if k != "score")
    line = f"{e.method} · {about} · {e.target.get('score', 'score')} {e.score:.4g}"
    checks = "; ".join(f"{k} {v}" for k, v in _check_rows(e))
    return f"{line}\n{checks}" if checks else line


def _check_rows(e: Explanation) -> list[list[str]]:
    rows = []
    if "completeness" in e.checks:
        relative = e.checks["completeness"]["relative_error"]
        rows.append(["IG completeness error", "n/a (the score did not move)" if relative is None else
                     f"{relative:.2%}"])
    if "deletion" in e.checks:
        d = e.checks["deletion"]
        rows.append(["deletion AUC (top first vs random)", f"{d['auc']:.4g} vs {d['random_auc']:.4g}"])
    return rows


def _png(fig: Figure) -> bytes:
    plt = _plt()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()



def _plt() -> Any:
    from dlforge.plots import plt  # matplotlib with the Agg backend

    return plt
