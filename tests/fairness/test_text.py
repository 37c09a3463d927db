"""Text classification carries its table's other columns: a text run reweighs by one and is audited by it, with the
texts' groups aligned with the evaluated texts."""

from __future__ import annotations

from pathlib import Path

import dlforge
from dlforge.data.texts import read_texts
from dlforge.fairness import audit_run
from tests.conftest import sentiment_rows, write_csv


def test_a_text_run_is_reweighed_and_audited_by_a_column_beside_the_text(tmp_path: Path) -> None:
    rows = sentiment_rows(80)
    for i, row in enumerate(rows):  # 'a' writes most of the fresh reviews
        row["author"] = "a" if (row["label"] == "fresh") == (i % 5 != 0) else "b"
        row["note"] = "" if i % 4 else "checked"
    source = write_csv(tmp_path / "reviews.csv", rows)
    table = read_texts(str(source))
    assert table.columns["author"][:4] == [r["author"] for r in rows[:4]] and table.columns["note"][1] is None
    assert table.subset([3, 0]).columns["author"] == [rows[3]["author"], rows[0]["author"]]
    spec = dlforge.validate_spec({
        "name": "text-fair", "task": "text_classification",
        "data": {"source": str(source), "max_length": 32, "split": {"val": 0.2, "test": 0.3, "seed": 0}},
        "model": {"name": "transformer", "kwargs": {"d_model": 32, "heads": 2, "layers": 1}},
        "train": {"epochs": 1, "batch_size": 16, "seed": 0, "fairness": {"reweigh": ["author"]}}})
    run = dlforge.train(spec, tmp_path / "runs", progress=False).path
    predictor = dlforge.load(run)
    weights, sizes = predictor.meta["fairness"]["reweigh"], predictor.meta["sizes"]
    assert weights["rows"] == sizes["train"] and weights["max"] > 1.5  # the rare (author, label) cells weigh more
    texts, targets, columns = predictor.task.audit_data(predictor.meta)
    by_text = {r["text"]: r for r in rows}
    assert list(columns["text"]) == list(texts) and [by_text[t]["author"] for t in texts] == list(columns["author"])
    assert [predictor.meta["classes"][i] for i in targets] == [by_text[t]["label"] for t in texts]
    result, _ = audit_run(run, "author", positive="fresh", n_boot=0, min_group=2)
    assert result["rows"] == sizes["test"] and set(result["model"]["author"]["by_group"]) == {"a", "b"}
    assert "note" in result["data"]["groups"]["author"]["a"]["missing"]
    assert result["data"]["proxies_skipped"]["author"] == ["text"]  # free text is not a proxy column
