"""The transfer-learning lab: one --quick run through the CLI (its results, figure and data files, and that
no test text is ever trained on), the nested stratified subsets, the layout that hands the text task exactly
the intended validation rows, and the TF-IDF + logistic regression baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dlforge.data.split import stratified_split
from dlforge.errors import DlforgeError
from dlforge.labs import run_lab
from dlforge.labs.transfer_learning import METHODS, layout_rows, stratified_order, tfidf_logreg
from tests.labs.conftest import run_quick


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """One `dlforge lab run transfer-learning --quick`: (folder, results, CLI output)."""
    return run_quick("transfer-learning", tmp_path_factory.mktemp("lab") / "tl")


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)  # as the text task reads a CSV


def test_three_methods_at_every_size(quick: tuple) -> None:
    out, results, output = quick
    assert results["lab"] == "transfer-learning" and results["quick"] is True
    assert results["sizes"] == [50, 200]
    assert len(results["rows"]) == len(results["sizes"]) * len(METHODS)
    for n in results["sizes"]:
        for method in METHODS:
            (row,) = [r for r in results["rows"] if r["n"] == n and r["method"] == method]
            assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["f1_macro"] <= 1.0
            assert row["train_time_s"] >= 0.0
            if method != "tfidf":  # at least min_steps optimizer steps, the best validation epoch restored
                assert row["steps"] >= results["config"]["min_steps"]
                assert 1 <= row["best_epoch"] <= row["epochs"] and row["train_loss"] > 0.0
    for n in results["sizes"]:
        assert f"n = {n}" in output  # the CLI's headline table
    summary = (out / "summary.md").read_text()
    assert "| 50 | " in summary and "| 200 | " in summary


def test_learning_curve_png(quick: tuple) -> None:
    out, results, _ = quick
    assert "learning_curve.png" in results["files"]
    with Image.open(out / "learning_curve.png") as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200


def test_tfidf_beats_chance(quick: tuple) -> None:
    _, results, _ = quick
    (row,) = [r for r in results["rows"] if r["n"] == 200 and r["method"] == "tfidf"]
    # Measured 0.620 on the 200 quick test texts (majority class 0.505); 0.55–0.665 over seeds 0–2.
    assert row["accuracy"] > 0.55
    assert row["C"] in results["config"]["C_grid"]


def test_test_texts_are_never_trained_on(quick: tuple) -> None:
    out, results, _ = quick
    test = _read(out / results["data"]["test_csv"])
    assert len(test) == results["data"]["test"] == results["config"]["test_size"] == 200
    test_texts = set(test["text"])
    assert len(test_texts) == len(test)
    trained: dict[int, set[str]] = {}
    validation: list[set[str]] = []
    for entry in results["training_files"]:
        frame = _read(out / entry["csv"])
        assert not test_texts & set(frame["text"])  # neither a training nor a validation text
        # The text task's own split of this file, with the lab's data.split: n training rows, the rest validation.
        classes = sorted(set(frame["label"]))
        targets = np.array([classes.index(label) for label in frame["label"]])
        split = entry["split"]
        train, val, held = stratified_split(targets, split["val"], split["test"], split["seed"])
        assert len(train) == entry["n"] and len(val) == results["data"]["val"] and len(held) == 0
        trained[entry["n"]] = set(frame["text"].iloc[train])
        validation.append(set(frame["text"].iloc[val]))
    assert all(v == validation[0] for v in validation)  # one fixed validation set
    assert trained[50] < trained[200]  # nested subsets
    assert not validation[0] & trained[200]


def test_stratified_order_gives_nested_stratified_prefixes() -> None:
    targets = np.repeat([0, 1, 2], [600, 300, 100])
    order = stratified_order(targets, seed=3)
    assert sorted(order.tolist()) == list(range(len(targets)))
    share = np.bincount(targets) / len(targets)
    for n in (10, 50, 123, 500, 1000):
        counts = np.bincount(targets[order[:n]], minlength=3)
        assert np.all(np.abs(counts - n * share) <= 1)
    assert not np.array_equal(order, stratified_order(targets, seed=4))


def test_layout_hands_the_split_exactly_the_validation_rows() -> None:
    targets = np.random.default_rng(0).choice(3, size=2000, p=[0.5, 0.3, 0.2])
    order = stratified_order(targets, seed=1)  # as the lab draws them: stratified, imbalanced classes
    val = order[:150]
    rest = order[150:]
    for n in (23, 40, 333, 1850):
        train = rest[stratified_order(targets[rest], seed=2)[:n]]
        file_rows, fraction, seed = layout_rows(train, val, targets, seed=0)
        assert sorted(file_rows.tolist()) == sorted([*train.tolist(), *val.tolist()])
        split_train, split_val, split_test = stratified_split(targets[file_rows], fraction, 0.0, seed)
        assert set(file_rows[split_val]) == set(val) and set(file_rows[split_train]) == set(train)
        assert len(split_test) == 0
    # Class shares far apart (all training rows of one class): no split seed can do it, and the lab says so.
    with pytest.raises(DlforgeError, match="validation rows"):
        layout_rows(np.flatnonzero(targets == 0)[:40], val, targets, seed=0)


def test_tfidf_logreg_learns_words() -> None:
    train = ["good great fun", "great good film", "good fun", "bad awful boring", "awful bad film", "boring bad"]
    labels = ["fresh", "fresh", "fresh", "rotten", "rotten", "rotten"]
    assert tfidf_logreg(train, labels, ["a great fun film", "an awful boring film"]) == ["fresh", "rotten"]


def test_unknown_option_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DlforgeError, match="unknown option"):
        run_lab("transfer-learning", tmp_path, quick=True, epoch=3)
