"""A run's reference profile, and new digits compared with it: a fresh clean sample passes, brighter, blurred
or noisy digits are flagged through the model's embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import dlforge
from dlforge.drift.profile import build_profile, compare, read_profile, write_profile


@pytest.fixture(scope="module")
def digits(trained_run):
    """The run's test digits split in two halves: reference and a fresh current sample."""
    predictor = dlforge.load(trained_run.path)
    items, _ = predictor.evaluation_data()
    images = np.asarray(items)  # (N, 8, 8, 1) uint8
    order = np.random.default_rng(0).permutation(len(images))
    half = len(images) // 2
    return predictor, images[order[:half]], images[order[half:]]


def brighter(images: np.ndarray) -> np.ndarray:
    return np.clip(images.astype(np.float64) + 80, 0, 255).astype(np.uint8)


def blurred(images: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.gaussian_filter(im.astype(np.float64), sigma=(1.0, 1.0, 0)) for im in images]
                    ).round().astype(np.uint8)


def noisy(images: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(1).normal(0, 50, images.shape)
    return np.clip(images + noise, 0, 255).astype(np.uint8)


def test_profile_round_trip(digits, trained_run, tmp_path) -> None:
    predictor, reference, _ = digits
    profile, table = build_profile(predictor, list(reference), metrics={"accuracy": 0.9})
    write_profile(tmp_path, profile, table)
    again, read = read_profile(tmp_path)
    assert again["rows"] == len(reference) == len(read)
    assert {"brightness", "contrast", "sharpness", "pc_0", "prediction_label", "prediction_confidence"} <= set(read)
    assert again["columns"]["brightness"]["type"] == "numeric"
    assert np.allclose(read["pc_0"].mean(), 0.0, atol=1e-6)  # centred by the PCA it was projected with


@pytest.mark.parametrize("corruption", [None, brighter, blurred, noisy], ids=["clean", "brighter", "blurred", "noisy"])
def test_corrupted_digits_are_flagged_and_clean_ones_are_not(digits, corruption) -> None:
    predictor, reference, current = digits
    profile, table = build_profile(predictor, list(reference))
    result, _ = compare(predictor, profile, table, list(current if corruption is None else corruption(current)))
    assert result["embeddings"]["drifted"] is (corruption is not None), result["embeddings"]
    assert result["drifted"] is (corruption is not None)


def test_calibrated_confidence_estimates_accuracy_without_labels(trained_run) -> None:
    """Temperature scaling at training makes the mean confidence on unlabelled data track the accuracy; the
    uncalibrated softmax (T = 1) is further off."""
    predictor = dlforge.load(trained_run.path)
    items, targets = predictor.evaluation_data()
    predictions = predictor.predict(items)
    accuracy = np.mean([p["label"] == predictor.classes[t] for p, t in zip(predictions, targets, strict=True)])
    estimate = np.mean([p["confidence"] for p in predictions])
    raw = predictor.outputs(items).softmax(-1).max(-1).values.mean().item()
    assert abs(estimate - accuracy) < 0.05
    assert abs(estimate - accuracy) < abs(raw - accuracy)
