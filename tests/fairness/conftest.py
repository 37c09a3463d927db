"""Adult, small: 4000 training and 2000 test rows of UCI Adult (builtin:adult's files) as CSVs, and two MLP runs of
two epochs on them, one plain and one reweighed by sex, shared by the module's tests. Runs the tests change (group
thresholds) are copies."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import dlforge

TRAIN_ROWS, TEST_ROWS = 4000, 2000


def adult_spec(folder: Path, **fairness: object) -> dict:
    return {"name": "adult-fair", "task": "tabular_classification",
            "data": {"source": str(folder / "train.csv"), "test_source": str(folder / "test.csv"), "label": "income",
                     "exclude": ["fnlwgt"], "split": {"val": 0.1, "seed": 0}},
            "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
            "train": {"epochs": 2, "batch_size": 128, "optimizer": {"lr": 0.003}, "seed": 0, "fairness": fairness}}


@pytest.fixture(scope="session")
def adult_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dlforge.data.tables import read_tables

    folder = tmp_path_factory.mktemp("adult-small")
    rng = np.random.default_rng(0)
    for table, name, n in zip(read_tables("builtin:adult"), ("train", "test"), (TRAIN_ROWS, TEST_ROWS), strict=True):
        table.frame.iloc[np.sort(rng.choice(len(table.frame), n, replace=False))].to_csv(folder / f"{name}.csv",
                                                                                          index=False)
    return folder


@pytest.fixture(scope="session")
def adult_runs(adult_folder: Path) -> dict[str, Path]:
    """{"plain": run, "reweighed": run (train.fairness.reweigh: [sex])}."""
    runs = {}
    for name, fairness in (("plain", {}), ("reweighed", {"reweigh": ["sex"]})):
        spec = dlforge.validate_spec(adult_spec(adult_folder, **fairness))
        runs[name] = dlforge.train(spec, adult_folder / "runs" / name, progress=False).path
    return runs


@pytest.fixture
def run_copy(adult_runs: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """A private copy of one of the runs, for tests that write into it."""
    return lambda name: Path(shutil.copytree(adult_runs[name], tmp_path / name))
