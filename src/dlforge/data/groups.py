"""Groups: the sensitive columns of audited or training data as group names, checked before any work.

A group is named by its value as a category (`dlforge.data.tables.category`: strings stripped, 3 and 3.0 both
'3'); a missing value is the group '(missing)'. A column that is not there is an error naming the columns that are;
a group under `min_size` members is a warning, and the group is left out of the differences and ratios.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from dlforge.data.tables import category
from dlforge.errors import DlforgeError
from dlforge.registry import did_you_mean

log = logging.getLogger("dlforge")

MISSING = "(missing)"


def group_name(value: Any) -> str:
    """One value of a sensitive column as its group's name."""
    try:
        name = category(value)
    except ValueError:
        name = str(value)
    return MISSING if name is None else name


def group_names(values: Sequence[Any]) -> np.ndarray:
    """(N,) object array of group names."""
    return np.array([group_name(v) for v in values], dtype=object)


def parse_columns(text: str | Sequence[str]) -> list[str]:
    """'sex,race' (or a list of them) -> ['sex', 'race']."""
    parts = [text] if isinstance(text, str) else list(text)
    columns = [c.strip() for part in parts for c in part.split(",") if c.strip()]
    if not columns:
        raise DlforgeError("--sensitive: name the group column(s), e.g. --sensitive sex,race")
    return list(dict.fromkeys(columns))


def sensitive_groups(frame: Any, columns: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """{column: (N,) group names} from a pandas DataFrame of the data's columns (None: it has none). `what` names
    the data in errors ("the audited data", "train.fairness.reweigh")."""
    if frame is None:
        raise DlforgeError(f"{what}: this task's items carry no columns besides the model's input, so there are no "
                           "groups to compare (tabular rows and text tables with extra columns do)")
    present = [str(c) for c in frame.columns]
    for column in columns:
        if column not in present:
            raise DlforgeError(f"{what}: no column {column!r}{did_you_mean(column, present)}; the data's columns: "
                               f"{', '.join(present)}")
    return {column: group_names(frame[column].tolist()) for column in columns}


def small_groups(groups: np.ndarray, min_size: int) -> dict[str, int]:
    """{group: members} of the groups with fewer than `min_size` members."""
    names, counts = np.unique(groups.astype(str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True) if c < min_size}


def positive_class(classes: list[str], positive: str | None) -> int:
    """The index of the class audited as 'positive' (selected): `positive`, or the second of two classes. With more
    than two classes the audit is one-vs-rest of a class that must be named."""
    if positive is None:
        if len(classes) != 2:
            raise DlforgeError(f"--positive: this model has {len(classes)} classes ({', '.join(classes[:10])}); name "
                               "the one audited as the positive outcome (one-vs-rest)")
        return 1
    if str(positive) not in classes:
        raise DlforgeError(f"--positive {positive!r} is not a class of this model{did_you_mean(str(positive), classes)}"
                           f"; classes: {', '.join(classes)}")
    return classes.index(str(positive))
