"""The entropy lab: CE = H + KL on real predictions, temperature scaling on over-confident classifiers, label
smoothing (one --quick run through the CLI); the identities on hand-made distributions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from dlforge.labs.entropy import IDENTITY_TOLERANCE, identities
from tests.labs.conftest import run_quick


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    return run_quick("entropy", tmp_path_factory.mktemp("lab") / "entropy")


def _run(results: dict[str, Any], source: str, alpha: float) -> dict[str, Any]:
    return next(r for r in results["runs"] if r["source"] == source and r["alpha"] == alpha)


def test_cross_entropy_is_entropy_plus_kl(quick: tuple) -> None:
    _, results, _ = quick
    assert results["max_identity_error"] <= IDENTITY_TOLERANCE  # measured 1.4e-14 on losses up to ~20
    for r in results["runs"]:
        one_hot, smooth = r["identities"]
        assert one_hot["mean_entropy"] < 1e-15  # H(one-hot) = 0: the cross-entropy is all KL, and the NLL
        assert one_hot["max_abs_ce_minus_nll"] <= IDENTITY_TOLERANCE
        assert smooth["mean_entropy"] > 0 and smooth["mean_cross_entropy"] > smooth["mean_kl"]
        # what the task's loss computes is that cross-entropy, at the spec's label smoothing
        assert r["task_loss"]["alpha"] == r["alpha"] and r["task_loss"]["abs_difference"] <= 1e-10


def test_temperature_scaling_calibrates_over_confident_classifiers(quick: tuple) -> None:
    _, results, _ = quick
    for source in ("digits", "rotten_tomatoes"):
        r = _run(results, source, 0.0)
        assert r["temperature"] > 1.0  # over-confident (measured T = 1.96 and 4.17)
        assert r["predictions_unchanged"] and r["before"]["accuracy"] == r["after"]["accuracy"]
        assert r["accuracy"] == pytest.approx(r["after"]["accuracy"], abs=1e-6)  # numpy's and torchmetrics' count
        assert r["after"]["log_loss"] < r["before"]["log_loss"]
        assert r["before"]["mean_confidence"] > r["accuracy"]
    # Rotten Tomatoes at ~70% accuracy is strongly over-confident: ECE measured 0.234 -> 0.040.
    rt = _run(results, "rotten_tomatoes", 0.0)
    assert rt["after"]["ece"] < 0.5 * rt["before"]["ece"] and rt["before"]["ece"] > 0.1
    digits = _run(results, "digits", 0.0)
    assert digits["after"]["ece"] < digits["before"]["ece"]  # measured 0.033 -> 0.013


def test_label_smoothing_lowers_confidence(quick: tuple) -> None:
    _, results, _ = quick
    runs = [_run(results, "digits", a) for a in (0.0, 0.05, 0.1)]
    confidence = [r["before"]["mean_confidence"] for r in runs]
    assert confidence[0] > confidence[1] > confidence[2]
    # Trained towards at most 1 − α + α/K, the smoothed digits networks end up under-confident (T < 1).
    assert all(r["temperature"] < 1 for r in runs[1:])
    assert all(r["predictions_unchanged"] for r in runs)


def test_files(quick: tuple) -> None:
    out, results, output = quick
    for name in ("reliability_digits.png", "reliability_rotten_tomatoes.png", "label_smoothing.png"):
        assert name in results["files"]
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 400
    summary = (out / "summary.md").read_text()
    assert "Guo et al." in summary and "16.53" in summary and "Müller et al." in summary
    assert (out / "data" / "digits.csv").read_text().startswith("p0,p1,")
    assert "ECE before → after" in output


def test_identities_on_hand_made_distributions() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([0, 2])
    measured = identities(logits, targets, alpha=0.3)
    p = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)  # (1 − 0.3)·onehot + 0.3/3
    h = -(p * p.log()).sum(1)
    assert measured["mean_entropy"] == pytest.approx(float(h.mean()), abs=1e-15)
    q = logits.softmax(1)
    ce = -(p * q.log()).sum(1)
    assert measured["mean_cross_entropy"] == pytest.approx(float(ce.mean()), abs=1e-15)
    # The uniform prediction's cross-entropy is log K whatever the labels.
    assert float(-(p[1] * q[1].log()).sum()) == pytest.approx(math.log(3), abs=1e-15)
    assert measured["max_abs_ce_minus_h_plus_kl"] <= 1e-15
