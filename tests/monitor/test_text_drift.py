"""Texts: reviews from the training domain pass, texts from another domain are flagged."""

from __future__ import annotations

import numpy as np

import dlforge
from dlforge.drift.profile import compare, read_profile
from dlforge.spec import validate_spec
from tests.conftest import sentiment_rows, write_csv
from tests.tasks.test_text_classification import text_spec

OTHER_DOMAIN = ["def {0}(x): return x ** {1}  # helper", "SELECT * FROM table_{0} WHERE id = {1};",
                "Warning: disk /dev/sda{0} is {1}% full", "import numpy as np_{0}; np_{0}.zeros({1})"]


def test_texts_from_another_domain_are_flagged(tmp_path) -> None:
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(300))
    model = {"name": "transformer", "kwargs": {"d_model": 32, "heads": 2, "layers": 1}}
    run = dlforge.train(validate_spec(text_spec(data, model, epochs=2)), tmp_path / "runs", progress=False)
    predictor = dlforge.load(run.path)
    profile, reference = read_profile(run.path)
    assert len(reference) == 60  # the test split
    same, _ = compare(predictor, profile, reference, [r["text"] for r in sentiment_rows(80, seed=7)])
    rng = np.random.default_rng(0)
    other = [OTHER_DOMAIN[i % 4].format(i, rng.integers(2, 99)) for i in range(80)]
    moved, _ = compare(predictor, profile, reference, other)
    assert not same["drifted"], same["embeddings"]
    assert moved["drifted"] and moved["embeddings"]["drifted"], moved["embeddings"]
    assert {"unusual_characters", "out_of_vocabulary"} <= set(moved["inputs"]["drifted_columns"])
    assert "out_of_vocabulary" not in same["inputs"]["drifted_columns"]
    assert reference["out_of_vocabulary"].mean() < 0.2  # the tokenizer was fit on this domain
