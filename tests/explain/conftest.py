"""A text classifier trained well enough to explain (the session's tiny text runs see one epoch of 24 reviews), and
one CPU thread while explaining: the models are tiny, and a second thread only waits on the first (on a busy machine
the suite took 145 s with two threads, 25 s with one)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import dlforge
from tests.conftest import sentiment_rows, write_csv
from tests.tasks.test_text_classification import text_spec


@pytest.fixture(scope="session")
def sentiment_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The transformer written here (32 wide, one layer) on 80 reviews whose label follows their adjectives."""
    root = tmp_path_factory.mktemp("sentiment")
    spec = text_spec(write_csv(root / "reviews.csv", sentiment_rows(80)),
                     {"name": "transformer", "kwargs": {"d_model": 32, "heads": 2, "layers": 1}}, epochs=6)
    spec["train"] |= {"optimizer": {"lr": 1e-2}, "monitor": {"metric": "val/loss"}}  # accuracy is 1.0 from epoch 2
    with single_thread():
        return dlforge.train(dlforge.validate_spec(spec), root / "runs", progress=False).path


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with single_thread():
        yield
