"""Mitigation on Adult: Kamiran-Calders reweighing at training and fairlearn's ThresholdOptimizer stored in the run
each lower the demographic-parity difference; the stored thresholds decide as fairlearn's own, the same way for the
same input, in the Predictor and through a real server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference

import dlforge
from dlforge.errors import DlforgeError
from dlforge.fairness import GroupThresholds, audit_run, fit_thresholds
from dlforge.tasks.thresholds import draws
from tests.fairness.test_audit import predictions
from tests.serve.conftest import assert_same_predictions


def test_reweighing_makes_sex_and_label_independent_and_lowers_the_dp_difference(adult_runs) -> None:
    meta = json.loads((adult_runs["reweighed"] / "meta.json").read_text())
    weights = meta["fairness"]["reweigh"]
    assert weights["columns"] == ["sex"] and weights["rows"] == meta["sizes"]["train"]
    cells = pd.DataFrame([{"sex": c["group"]["sex"], "label": c["label"], "n": c["count"], "w": c["weight"]}
                          for c in weights["cells"]])
    n = cells["n"].sum()
    for _, c in cells.iterrows():  # w(g, y) = P(g) P(y) / P(g, y), from the training rows' counts
        p_g, p_y = cells.loc[cells.sex == c.sex, "n"].sum() / n, cells.loc[cells.label == c.label, "n"].sum() / n
        assert c.w == pytest.approx(p_g * p_y / (c.n / n), rel=1e-5)
    assert cells.set_index(["sex", "label"]).loc[("Female", ">50K"), "w"] > 2  # rich women were rare
    dp = {}
    for name, run in adult_runs.items():
        rows, y, y_pred = predictions(run)
        dp[name] = demographic_parity_difference(y, y_pred, sensitive_features=rows["sex"])
    assert dp["plain"] > 0.1 and dp["reweighed"] < dp["plain"] - 0.05, dp
    assert "Training examples were drawn in proportion to weights from" in (adult_runs["reweighed"] / "card.md"
                                                                            ).read_text()


def test_group_thresholds_lower_the_dp_difference_on_rows_they_were_not_fit_on(run_copy) -> None:
    run = run_copy("plain")
    result, _ = audit_run(run, "sex", mitigate="threshold", n_boot=0)
    m = result["mitigation"]
    before, after = m["rows"]
    assert m["fit_rows"] + m["eval_rows"] == 2000 and m["constraint"] == "demographic_parity"
    assert after["demographic_parity_difference"] < 0.05 < 0.1 < before["demographic_parity_difference"]
    assert -0.01 < m["accuracy_cost"] < 0.06  # parity costs some accuracy, not much
    stored = json.loads((run / "fairness" / "thresholds.json").read_text())
    assert stored["column"] == "sex" and set(stored["groups"]) == {"Female", "Male"}
    assert set(stored["groups"]["Female"]) == {"p0", "operator0", "threshold0", "p1", "operator1", "threshold1"}
    # the audit now describes the decisions as served: with the thresholds, over all rows
    rows, y, y_pred = predictions(run)
    assert result["decisions"].startswith("with group thresholds by sex")
    assert result["model"]["sex"]["summary"]["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(y, y_pred, sensitive_features=rows["sex"]), abs=1e-12)
    assert "Group thresholds by `sex`" in (run / "card.md").read_text()
    assert (run / "audit" / "audit.html").read_text().count("data:image/png") == 2  # groups, before/after


def test_stored_thresholds_decide_as_fairlearns_threshold_optimizer(adult_runs, tmp_path: Path) -> None:
    predictor = dlforge.load(adult_runs["plain"])
    items, targets = predictor.evaluation_data()
    scores = predictor.task.probabilities(predictor.outputs(items), predictor.meta)[:, 1].double().numpy()
    sex = np.array([row["sex"] for row in items], dtype=object)
    for constraint in ("demographic_parity", "equalized_odds"):
        thresholds, optimizer = fit_thresholds(scores, np.asarray(targets), sex, "sex", ">50K", constraint)
        thresholds.save(tmp_path)  # JSON, and back
        loaded = GroupThresholds.load(tmp_path)
        expected = optimizer._pmf_predict(scores[:, None], sensitive_features=sex)[:, 1]
        assert np.array_equal(loaded.positive_rate(scores, sex), expected)
        assert ((expected > 0) & (expected < 1)).any()  # some rows are decided by the draw


def test_the_predictor_applies_them_one_answer_per_input(run_copy) -> None:
    run = run_copy("plain")
    audit_run(run, "sex", mitigate="threshold", n_boot=0)
    predictor = dlforge.load(run)
    assert predictor.thresholds is not None and predictor.thresholds.column == "sex"
    items, _ = predictor.evaluation_data()
    items = list(items[:400])
    got = predictor.predict(items)
    probs = predictor.task.probabilities(predictor.outputs(items), predictor.meta).numpy()
    sex = [row["sex"] for row in items]
    positive = draws(items) < predictor.thresholds.positive_rate(probs[:, 1], sex)
    assert [p["label"] for p in got] == [">50K" if yes else "<=50K" for yes in positive]
    assert [p["confidence"] for p in got] == pytest.approx([float(q[int(yes)]) for q, yes in zip(probs, positive,
                                                                                                  strict=True)],
                                                           abs=1e-6)
    changed = [i for i, p in enumerate(got) if p["label"] != max(p["probabilities"], key=p["probabilities"].get)]
    assert changed  # the thresholds do change decisions
    # the same input, alone or in another batch, in another order, as served JSON: the same answer
    again = predictor.predict(items[::-1])[::-1]
    alone = [predictor.predict([items[i]])[0] for i in changed[:5]]
    # the same labels; probabilities to float32's last bits (another batch runs other kernels)
    assert_same_predictions(again, got)
    assert_same_predictions(alone, [got[i] for i in changed[:5]])
    predictor.thresholds = GroupThresholds("gender", ">50K", "demographic_parity", {}, {})
    with pytest.raises(DlforgeError, match="item 0: this model decides with group thresholds by 'gender'"):
        predictor.predict(items[:1])


def test_a_served_prediction_is_the_predictors_with_thresholds(run_copy) -> None:
    from tests.serve.conftest import ThreadServer

    run = run_copy("plain")
    audit_run(run, "sex", mitigate="threshold", n_boot=0)
    offline = dlforge.load(run)
    items = list(offline.evaluation_data()[0][:64])
    wire = offline.wire
    instances = [wire.encode(item) for item in items]
    expected = offline.predict(items)
    with ThreadServer(run) as server, server.client() as c:
        served = c.post("/predict", json={"instances": instances})
        assert served.status_code == 200, served.text
        assert_same_predictions(served.json()["predictions"], expected)
        for i in range(3):  # one at a time: the same answers
            assert_same_predictions(c.post("/predict", json={"instances": [instances[i]]}).json()["predictions"],
                                    [expected[i]])
        # the warm-up (the wire's example has no group column) still taught V2 metadata its outputs
        assert {o["name"] for o in c.get(f"/v2/models/{server.served.name}").json()["outputs"]} >= {"label"}
    raw = dlforge.load(run)
    raw.thresholds = None
    assert [p["label"] for p in raw.predict(items)] != [p["label"] for p in expected]
