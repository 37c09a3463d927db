"""The gradient-descent lab: contraction rates against theory, divergence above 2/L, and the range test's suggestion
against a grid of rates on digits (one --quick run through the CLI); the quadratics' construction."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from dlforge.labs.gradient_descent import ACCURACY_MARGIN, RATE_TOLERANCE, measured_rate, quadratic, run_optimizer
from tests.labs.conftest import run_quick


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    return run_quick("gradient-descent", tmp_path_factory.mktemp("lab") / "gd")


def test_contraction_rates_within_10_percent_of_theory(quick: tuple) -> None:
    _, results, _ = quick
    assert [q["kappa"] for q in results["quadratics"]] == [10, 100, 1000]
    for q in results["quadratics"]:
        kappa = q["kappa"]
        gd, hb = q["rates"]["gd"], q["rates"]["heavy_ball"]
        assert gd["theory"] == pytest.approx((kappa - 1) / (kappa + 1))
        assert hb["theory"] == pytest.approx((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1))
        # −log(rate), the e-folds per step, within 10% (measured: GD 0.998–1.000, heavy ball 0.95)
        for r in (gd, hb):
            assert abs(math.log(r["measured"]) / math.log(r["theory"]) - 1) <= RATE_TOLERANCE, (kappa, r)
        assert hb["measured"] < gd["measured"]  # momentum's √κ beats κ


def test_a_step_above_2_over_L_diverges(quick: tuple) -> None:
    _, results, _ = quick
    for q in results["quadratics"]:
        above, below = q["near_2_over_L"]["2.1/L"], q["near_2_over_L"]["1.9/L"]
        assert above["diverged"] and above["curve"][-1] > 1e6 * above["curve"][0]
        assert above["theory_factor"] == above["top_factor"] == pytest.approx(1.1)  # |1 − 2.1|
        assert above["measured_factor"] == pytest.approx(above["theory_factor"], rel=0.01)  # measured 1.1000
        assert not below["diverged"] and below["measured_factor"] < 1


def test_lr_find_suggestion_trains_within_a_point_of_the_grids_best(quick: tuple) -> None:
    _, results, _ = quick
    digits = results["digits"]
    found = digits["range_test"]
    assert found["start"] < found["lr"] < found["min_loss_lr"] < found["end"]
    assert found["stopped"] in ("diverged", "end") and found["steps_taken"] > 20
    grid = [t for t in digits["trained"] if t["in_grid"]]
    assert [t["lr"] for t in grid] == results["config"]["grid"]
    best = max(t["test_accuracy"] for t in grid)
    assert digits["suggested"]["test_accuracy"] >= best - ACCURACY_MARGIN  # measured: equal (0.972)
    assert best > 0.9 and min(t["test_accuracy"] for t in grid) < best - 0.1  # the grid spans bad and good rates


def test_files(quick: tuple) -> None:
    out, results, output = quick
    for name in ("contraction.png", "lr_find.png"):
        assert name in results["files"]
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 500
    summary = (out / "summary.md").read_text()
    assert "Polyak 1964" in summary and "Smith 2017" in summary
    assert "lr-find suggestion" in output


def test_quadratic_has_the_set_spectrum() -> None:
    problem = quadratic(100.0, seed=4)
    a, rows = problem["A"].numpy(), problem["X"].numpy()
    np.testing.assert_allclose(np.linalg.eigvalsh(a), np.geomspace(1, 100, a.shape[0]), rtol=1e-10)
    np.testing.assert_allclose(rows.T @ rows / len(rows), a, atol=1e-10)  # least squares with the same Hessian


def test_measured_rate_of_a_geometric_sequence() -> None:
    errors = 0.9 ** np.arange(400.0)
    assert measured_rate(errors, 1e-2, 1e-12) == pytest.approx(0.9, rel=1e-12)
    # From an eigenvector of the smallest eigenvalue μ = 1, GD at step η contracts by exactly 1 − η per step.
    problem = quadratic(10.0, seed=0)
    start = torch.linalg.eigh(problem["A"]).eigenvectors[:, 0]
    errors = run_optimizer(problem, start, lambda p: torch.optim.SGD(p, lr=0.05), 300)
    assert measured_rate(errors, 1e-1, 1e-6) == pytest.approx(0.95, rel=1e-9)
