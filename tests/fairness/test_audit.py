"""`dlforge audit`: its numbers are fairlearn's own on the run's predictions (bootstrap intervals included), the data
audit, the files it writes (audit.json, audit.html, the card and report refreshed), and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score
from typer.testing import CliRunner

import dlforge
from dlforge.cli import app
from dlforge.data.groups import positive_class
from dlforge.errors import DlforgeError
from dlforge.fairness import audit_run

N_BOOT = 8


@pytest.fixture(scope="module")
def audited(adult_runs: dict[str, Path]) -> tuple[dict, Path]:
    return audit_run(adult_runs["plain"], "sex,race", n_boot=N_BOOT)


def predictions(run: Path, source: str | None = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(the audited rows, y_true, y_pred) as 0/1 of '>50K', from the Predictor itself."""
    predictor = dlforge.load(run)
    items, targets = predictor.evaluation_data(source)
    labels = [p["label"] for p in predictor.predict(items)]
    return pd.DataFrame(list(items)), (np.asarray(targets) == 1).astype(int), (np.array(labels) == ">50K").astype(int)


def test_the_numbers_are_fairlearns_on_the_same_predictions(audited: tuple[dict, Path], adult_runs) -> None:
    result, _ = audited
    rows, y, y_pred = predictions(adult_runs["plain"])
    assert result["rows"] == len(y) == 2000 and result["positive"] == ">50K" and result["sensitive"] == ["sex", "race"]
    for column in ("sex", "race"):
        frame = MetricFrame(metrics={"accuracy": accuracy_score, "selection_rate": selection_rate,
                                     "true_positive_rate": true_positive_rate,
                                     "false_positive_rate": false_positive_rate},
                            y_true=y, y_pred=y_pred, sensitive_features=rows[column], n_boot=N_BOOT,
                            ci_quantiles=[0.025, 0.975], random_state=0)
        model = result["model"][column]
        low, high = frame.by_group_ci
        for group, expected in frame.by_group.iterrows():
            got = model["by_group"][group]
            assert got["count"] == int((rows[column] == group).sum())
            for metric, value in expected.items():
                assert got[metric]["value"] == pytest.approx(value, abs=1e-12), (column, group, metric)
                # the same resamples: fairlearn's bootstrap with the same random_state
                assert got[metric]["low"] == pytest.approx(low.loc[group, metric], abs=1e-12)
                assert got[metric]["high"] == pytest.approx(high.loc[group, metric], abs=1e-12)
        kept = rows[column].isin(model["summary"]["groups_compared"]).to_numpy()
        kw = {"sensitive_features": rows[column][kept]}
        s = model["summary"]
        assert s["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(y[kept], y_pred[kept], **kw), abs=1e-12)
        assert s["demographic_parity_ratio"] == pytest.approx(demographic_parity_ratio(y[kept], y_pred[kept], **kw),
                                                              abs=1e-12)
        assert s["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(y[kept], y_pred[kept], **kw), abs=1e-12)
    sex = result["model"]["sex"]["summary"]
    assert sex["demographic_parity_difference"] > 0.1 and sex["four_fifths_flag"]  # the model did learn the gap
    # calibration per group: the mean predicted probability beside the observed rate
    female = result["model"]["sex"]["by_group"]["Female"]
    assert female["positive_rate"]["value"] == pytest.approx(y[(rows["sex"] == "Female").to_numpy()].mean())
    assert abs(female["mean_probability"]["value"] - female["positive_rate"]["value"]) < 0.1


def test_the_data_audit_counts_groups_base_rates_missing_values_and_proxies(audited, adult_runs) -> None:
    result, _ = audited
    rows, y, _ = predictions(adult_runs["plain"])
    groups = result["data"]["groups"]["sex"]
    for group in ("Female", "Male"):
        at = (rows["sex"] == group).to_numpy()
        assert groups[group]["count"] == at.sum() and groups[group]["base_rate"] == pytest.approx(y[at].mean())
        assert groups[group]["missing"]["occupation"] == pytest.approx(rows["occupation"][at].isna().mean(), abs=1e-6)
    assert groups["Male"]["base_rate"] > 2 * groups["Female"]["base_rate"]
    proxies = {p["feature"]: p["auc"] for p in result["data"]["proxies"]["sex"]}
    assert "sex" not in proxies and set(proxies) >= {"relationship", "age", "race", "fnlwgt"}
    assert proxies["relationship"] > 0.8 > proxies["fnlwgt"]  # husband/wife says sex; a sampling weight does not
    assert 0.4 < proxies["fnlwgt"] < 0.6


def test_it_writes_json_html_and_refreshes_the_card_and_report(audited, adult_runs) -> None:
    _, folder = audited
    run = adult_runs["plain"]
    assert folder == run / "audit"
    written = json.loads((folder / "audit.json").read_text())
    assert written["data"]["proxies"]["sex"][0]["feature"] == "relationship"
    page = (folder / "audit.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "four-fifths" in page  # per-group bars for sex and race
    card = (run / "card.md").read_text()
    assert "Performance is reported per group of `sex` (2 groups), `race` (5 groups)" in card
    assert "| Female | " in card and "below the four-fifths rule" in card and "`relationship`" in card
    assert "Demographic-parity difference" in (run / "report.html").read_text()


def test_bad_inputs_get_clear_errors_and_warnings(adult_runs, adult_folder: Path, tmp_path: Path) -> None:
    run = adult_runs["plain"]
    with pytest.raises(DlforgeError, match=r"--sensitive: no column 'gender'; the data's columns: age, workclass"):
        audit_run(run, "gender", n_boot=0)
    with pytest.raises(DlforgeError, match=r"no column 'sexx' \(did you mean 'sex'\?\)"):
        audit_run(run, "race,sexx", n_boot=0)
    with pytest.raises(DlforgeError, match=r"--positive 'rich' is not a class of this model; classes: <=50K, >50K"):
        audit_run(run, "sex", positive="rich", n_boot=0)
    with pytest.raises(DlforgeError, match="name the one audited as the positive outcome"):
        positive_class(["a", "b", "c"], None)
    with pytest.raises(DlforgeError, match="--mitigate 'reweigh': choose threshold"):
        audit_run(run, "sex", mitigate="reweigh", n_boot=0)
    # a group with one member: warned about, shown (flagged), left out of the differences and ratios
    rows = pd.read_csv(adult_folder / "test.csv").head(300)
    rows.loc[7, "race"] = "Martian"
    rows.to_csv(tmp_path / "odd.csv", index=False)
    result, _ = audit_run(run, "race", data=str(tmp_path / "odd.csv"), n_boot=0, min_group=2)
    assert result["warnings"] == ["--sensitive race: group(s) with fewer than 2 members, left out of the differences "
                                  "and ratios and flagged: 'Martian' (1)"]  # logged as a warning too
    model = result["model"]["race"]
    assert model["by_group"]["Martian"]["small"] and model["by_group"]["Martian"]["count"] == 1
    assert "Martian" not in model["summary"]["groups_compared"]
    with pytest.raises(DlforgeError, match=r"--sensitive sex: 2 group\(s\), 0 with at least 1000 members"):
        audit_run(run, "sex", data=str(tmp_path / "odd.csv"), n_boot=0, min_group=1000)


def test_the_command_prints_the_groups_and_exits_2_on_a_bad_column(adult_runs) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", str(adult_runs["reweighed"]), "--sensitive", "sex", "--n-boot", "0"])
    assert ok.exit_code == 0, ok.output
    assert "Female" in ok.output and "demographic-parity difference" in ok.output
    bad = runner.invoke(app, ["audit", str(adult_runs["reweighed"]), "--sensitive", "gender"])
    assert bad.exit_code == 2 and "no column 'gender'" in bad.output
