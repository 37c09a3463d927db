"""The hessian lab: Lanczos against the dense Hessian, and the edge of stability (one --quick run through the CLI);
Hessian-vector products against a known Hessian."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from dlforge.labs.hessian import DENSE_TOLERANCE, EOS_TOLERANCE, FlatParameters, hvp, top_eigenvalues
from tests.labs.conftest import run_quick


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    return run_quick("hessian", tmp_path_factory.mktemp("lab") / "hessian")


def test_lanczos_matches_the_dense_hessian(quick: tuple) -> None:
    _, results, _ = quick
    d = results["dense"]
    assert len(d["lanczos"]) == results["config"]["dense_k"] == 5
    assert d["max_rel_error"] <= DENSE_TOLERANCE  # measured 4e-15
    assert d["lanczos"] == sorted(d["lanczos"], reverse=True)
    assert len(d["spectrum"]) == d["parameters"] == 64 * 8 + 8 + 8 * 10 + 10
    assert d["dense_min"] < 0 < d["dense"][0]  # a network's loss: the Hessian is indefinite


def test_sharpness_ends_at_2_over_eta(quick: tuple) -> None:
    _, results, _ = quick
    runs = results["runs"]
    assert [r["eta"] for r in runs] == [0.6, 0.4]
    for r in runs:
        # It starts below 2/η (progressive sharpening has somewhere to go) ...
        assert r["initial_sharpness"] < 0.8 * r["threshold"]
        # ... and ends within 20% of it (measured 1.09 and 1.04 × 2/η), though for a quadratic it could not stay
        # above 2/η without diverging.
        assert abs(r["last_quarter_ratio"] - 1) <= EOS_TOLERANCE, r["last_quarter_ratio"]
        assert r["onset_step"] is not None
        # The loss keeps falling over the run, but not monotonically once at the edge.
        assert r["final_loss"] < r["loss_at_onset"] < r["losses"][0]
        assert r["loss_increases_after_onset"] > 10


def test_files(quick: tuple) -> None:
    out, results, output = quick
    for name in ("edge_of_stability.png", "lanczos_vs_dense.png"):
        assert name in results["files"]
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 400
    assert "Cohen et al. 2021" in (out / "summary.md").read_text()
    assert "Lanczos vs dense" in output


def test_hvp_and_lanczos_on_a_known_hessian() -> None:
    """A linear model with the square loss ½‖Xθ − y‖²/n has Hessian XᵀX/n, whatever θ."""
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((40, 6)))
    y = torch.tensor(rng.standard_normal((40, 1)))
    model = torch.nn.Linear(6, 1, bias=False).double()
    flat = FlatParameters(model)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((flat.bind(theta)(x) - y) ** 2).sum() / len(x)

    expected = (x.T @ x / len(x)).numpy()
    v = torch.tensor(rng.standard_normal(6))
    np.testing.assert_allclose(hvp(loss, flat.theta)(v).numpy(), expected @ v.numpy(), rtol=1e-12)
    values, vectors, _ = top_eigenvalues(loss, flat.theta, k=2)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(expected)[::-1][:2], rtol=1e-10)
    assert vectors.shape == (6, 2)
