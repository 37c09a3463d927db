"""Drift statistics: false alarms at the nominal rate, shifts found and named, numbers equal to scipy's and
statsmodels' own, embedding tests that see a shift and stay quiet without one, and large data fast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dlforge.drift.statistics import (
    binned,
    column_drift,
    dataset_drift,
    domain_classifier_auc,
    mmd_test,
    psi,
)


def frame(rng: np.random.Generator, n: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    """Four numeric columns, one categorical, one binary; `shift` adds to numeric columns (in std units)."""
    shift = shift or {}
    data = {f"x{i}": rng.normal(0.0, 1.0 + i, n) + shift.get(f"x{i}", 0.0) * (1.0 + i) for i in range(4)}
    data["colour"] = rng.choice(["red", "green", "blue", "grey"], n, p=[0.4, 0.3, 0.2, 0.1])
    data["member"] = rng.random(n) < 0.3
    return pd.DataFrame(data)


def test_no_drift_raises_few_alarms() -> None:
    """200 seeded trials of two samples from one distribution: the dataset's drift alarm stays under 7%."""
    alarms = sum(dataset_drift(frame(rng, 1000), frame(rng, 1000)).drifted
                 for rng in map(np.random.default_rng, range(200)))
    assert alarms / 200 <= 0.07


@pytest.mark.parametrize(("column", "method"), [("x0", "ks"), ("colour", "chisquare"), ("member", "z")])
def test_each_test_alarms_at_its_nominal_rate(column: str, method: str) -> None:
    """A test at p < 0.05 on two samples of one distribution alarms 5% of the time: over 1000 seeded trials
    (binomial sd 0.7%), at most 6.5%."""
    alarms = 0
    for seed in range(1000):
        rng = np.random.default_rng(seed)
        result = column_drift(frame(rng, 1000)[column], frame(rng, 1000)[column])
        assert result.method == method
        alarms += result.drifted
    assert alarms / 1000 <= 0.065


def test_large_references_use_distances_and_stay_quiet() -> None:
    alarms = {"wasserstein": 0, "jensenshannon": 0}
    for seed in range(50):
        rng = np.random.default_rng(seed)
        ref, cur = frame(rng, 5000), frame(rng, 5000)
        for column, method in (("x1", "wasserstein"), ("colour", "jensenshannon")):
            result = column_drift(ref[column], cur[column])
            assert result.method == method
            alarms[method] += result.drifted
    assert alarms == {"wasserstein": 0, "jensenshannon": 0}


@pytest.mark.parametrize("rows", [1000, 5000])
def test_a_half_std_shift_in_one_column_is_found_and_named(rows: int) -> None:
    rng = np.random.default_rng(1)
    result = dataset_drift(frame(rng, rows), frame(rng, rows, shift={"x2": 0.5}))
    assert result.drifted_columns == ["x2"]
    assert result.to_dict()["columns"][0]["column"] == "x2"  # the worst first
    assert not result.drifted  # one column of six is below the dataset share of 0.5
    assert dataset_drift(frame(rng, rows), frame(rng, rows, shift={f"x{i}": 0.5 for i in range(4)})).drifted


def test_scores_equal_the_reference_implementations() -> None:
    from statsmodels.stats.proportion import proportions_ztest

    rng = np.random.default_rng(2)
    ref, cur = frame(rng, 800), frame(rng, 600, shift={"x0": 0.1})
    assert column_drift(ref["x0"], cur["x0"]).score == stats.ks_2samp(ref["x0"], cur["x0"]).pvalue
    counts = [int(ref["member"].sum()), int(cur["member"].sum())]
    expected_z = proportions_ztest(counts, [len(ref), len(cur)])[1]
    assert column_drift(ref["member"], cur["member"]).score == pytest.approx(expected_z, rel=1e-9)
    table = pd.crosstab(np.r_[np.zeros(len(ref)), np.ones(len(cur))], np.r_[ref["colour"], cur["colour"]])
    assert column_drift(ref["colour"], cur["colour"]).score == pytest.approx(
        stats.chi2_contingency(table.to_numpy(), correction=False).pvalue, rel=1e-9)
    wasserstein = column_drift(ref["x1"], cur["x1"], method="wasserstein").score
    assert wasserstein == pytest.approx(stats.wasserstein_distance(ref["x1"], cur["x1"]) / np.std(ref["x1"]))
    r, c = binned(ref["colour"], cur["colour"], "categorical")
    assert psi(ref["colour"], cur["colour"], "categorical") == pytest.approx(np.sum((r - c) * np.log(r / c)))


def test_method_and_threshold_overrides() -> None:
    rng = np.random.default_rng(3)
    ref, cur = frame(rng, 1000), frame(rng, 1000, shift={"x0": 0.2})
    strict = dataset_drift(ref, cur, overrides={"x0": {"method": "psi", "threshold": 10.0}})
    x0 = next(c for c in strict.columns if c.column == "x0")
    assert x0.method == "psi" and not x0.drifted
    with pytest.raises(ValueError, match="nope"):
        dataset_drift(ref, cur, overrides={"nope": {"method": "ks"}})


def test_missing_columns_and_values_are_reported_not_compared() -> None:
    rng = np.random.default_rng(4)
    ref, cur = frame(rng, 500), frame(rng, 500).drop(columns=["x3"])
    cur["x1"] = np.nan
    ref.loc[5, "x0"], cur.loc[7, "x2"] = np.inf, -np.inf  # left out like missing values, not a crash
    result = dataset_drift(ref, cur)
    assert result.skipped == {"x1": "no values in the current data", "x3": "not in the current data"}
    x0 = next(c for c in result.columns if c.column == "x0")
    assert x0.reference_rows == 499 and np.isfinite(x0.psi)


def test_jensen_shannon_is_evidentlys_on_categories_one_sample_lacks() -> None:
    """No filling of empty categories, as Evidently: sqrt of the JS divergence (base e) of the raw shares."""
    ref = pd.Series(["a"] * 1500 + ["b"] * 500)
    cur = pd.Series(["a"] * 1500 + ["c"] * 500)
    p, q = np.array([0.75, 0.25, 0.0]), np.array([0.75, 0.0, 0.25])
    m = (p + q) / 2
    kl = lambda x, y: np.sum(x[x > 0] * np.log(x[x > 0] / y[x > 0]))  # noqa: E731
    expected = np.sqrt((kl(p, m) + kl(q, m)) / 2)
    assert column_drift(ref, cur, method="jensenshannon").score == pytest.approx(expected, rel=1e-9)


def test_embedding_tests_see_a_shift_and_stay_quiet_without_one() -> None:
    rng = np.random.default_rng(5)
    ref, same = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    moved = rng.normal(size=(300, 16)) + np.r_[0.4, np.zeros(15)]
    _, p_same = mmd_test(ref, same, permutations=100)
    _, p_moved = mmd_test(ref, moved, permutations=100)
    assert p_same > 0.05 and p_moved < 0.05
    assert domain_classifier_auc(ref, same) < 0.55 < domain_classifier_auc(ref, moved)


def test_100k_rows_by_100_columns_names_the_moved_one() -> None:
    """At scale (its time is benchmarks/drift.py's to measure)."""
    rng = np.random.default_rng(6)
    columns = [f"c{i}" for i in range(100)]
    ref = pd.DataFrame(rng.normal(size=(100_000, 100)), columns=columns)
    cur = pd.DataFrame(rng.normal(size=(100_000, 100)), columns=columns)
    cur["c7"] += 0.3
    result = dataset_drift(ref, cur)
    assert result.drifted_columns == ["c7"]
