"""Small generated data sets that the tasks' example specs (`Task.example_spec`) write as files: seeded,
learnable within an epoch or two, nothing downloaded. The built-in sets (`builtin:digits`, `builtin:shapes`) need
no files; these stand in for the user's own CSV and text files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

GOOD = ["wonderful", "moving", "brilliant", "funny", "charming", "gripping", "beautiful", "clever"]
BAD = ["dull", "tedious", "clumsy", "boring", "lifeless", "shallow", "awful", "predictable"]
COLORS = ["red", "green", "blue"]


def reviews(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Short film reviews (text, label fresh|rotten) whose label follows the adjectives: easy to learn, never
    identical."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "fresh" if i % 2 == 0 else "rotten"
        words = rng.choice(GOOD if label == "fresh" else BAD, size=2, replace=False)
        rows.append({"text": f"a {words[0]} and {words[1]} film, take {i}", "label": label})
    return rows


def paragraphs(n: int = 120, per_paragraph: int = 4, seed: int = 0) -> str:
    """`n` reviews as paragraphs of `per_paragraph` sentences each, separated by blank lines: a corpus of the same few
    sentence shapes, which a small language model learns quickly."""
    texts = [r["text"] for r in reviews(n, seed)]
    return "\n\n".join(" ".join(texts[i:i + per_paragraph]) for i in range(0, n, per_paragraph))


def table_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """x (numeric, every 10th missing), count (whole numbers), color (categorical), group (a column to keep out of
    the model), label: 'yes' when x plus the color's shift is positive, so the label is learnable."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        x, color = float(rng.normal()), COLORS[i % 3]
        label = "yes" if x + {"red": 1.0, "green": 0.0, "blue": -1.0}[color] > 0 else "no"
        rows.append({"x": None if i % 10 == 3 else round(x, 3), "count": int(rng.integers(0, 5)), "color": color,
                     "group": "a" if i % 2 else "b", "label": label})
    return rows


def monthly_sales(n: int = 120, ids: tuple[str, ...] = ("a", "b"), seed: int = 0) -> pd.DataFrame:
    """A long table of monthly series (timestamp, series_id, sales): seasonal with a trend, a past covariate (temp),
    a known-future promotion (promo) and a static region."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    stamps = pd.date_range("2010-01-01", periods=n, freq="MS")
    for k, sid in enumerate(ids):
        t = np.arange(n)
        promo = (rng.random(n) < 0.2).astype(float)
        y = 50 + 20 * k + 0.2 * t + 8 * np.sin(2 * np.pi * t / 12) + 5 * promo + rng.normal(0, 0.5, n)
        temp = 10 + 5 * np.cos(2 * np.pi * t / 12) + rng.normal(0, 0.3, n)
        rows += [{"timestamp": s.date().isoformat(), "series_id": sid, "sales": v, "temp": tc, "promo": p,
                  "region": "north" if k == 0 else "south"} for s, v, tc, p in zip(stamps, y, temp, promo, strict=True)]
    return pd.DataFrame(rows)


def write_csv(path: Path, rows: list[dict[str, Any]] | pd.DataFrame) -> Path:
    """`rows` as a CSV file with a header row (parent folders made)."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    (rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)).to_csv(path, index=False)
    return path
