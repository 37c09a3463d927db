"""The raw items of `dlforge explain`, read by the input kind: images by path; texts given as such or in text files;
anything else as JSON instances (a .json file of one instance or a list), or rows of a .csv / .parquet table,
decoded by the task's wire format as the server decodes them."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from dlforge.errors import DlforgeError
from dlforge.predictor import Predictor

LIMITS = SimpleNamespace(max_pixels=1 << 30, max_text_chars=1 << 24)  # local files: no request limits


def read_inputs(predictor: Predictor, paths: Sequence[Path], texts: Sequence[str] = ()) -> tuple[list[Any], list[str]]:
    """(items, names): one name per item, for the files written."""
    items: list[Any] = list(texts)
    names = [f"text-{i}" for i in range(len(texts))]
    wire = predictor.wire
    kind = wire.kind
    for path in paths:
        if not path.is_file():
            raise DlforgeError(f"{path}: no such input file")
        if kind == "image":
            items.append(str(path))
            names.append(path.stem)
        elif path.suffix.lower() == ".json":
            values = json.loads(path.read_text())
            values = values if isinstance(values, list) else [values]
            items += [wire.decode(v, f"{path.name}[{i}]", LIMITS) for i, v in enumerate(values)]
            names += [path.stem] if len(values) == 1 else [f"{path.stem}-{i}" for i in range(len(values))]
        elif path.suffix.lower() in (".csv", ".parquet"):
            import pandas as pd

            frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
            rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                    for row in frame.to_dict("records")]
            items += [wire.decode(row, f"{path.name}[{i}]", LIMITS) for i, row in enumerate(rows)]
            names += [f"{path.stem}-{i}" for i in range(len(rows))]
        elif kind == "text":
            items.append(path.read_text())
            names.append(path.stem)
        else:
            raise DlforgeError(f"{path}: {kind} inputs are read from .json files (an instance or a list of them)")
    if not items:
        raise DlforgeError("nothing to explain: give input files (or --text for a text model)")
    return items, names
