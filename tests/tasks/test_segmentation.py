"""Semantic segmentation: Dice, overfitting a handful of images, masks as PNG and run-length encoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dlforge
from dlforge.data.shapes import make_shapes
from dlforge.registry import SEGMENTERS
from dlforge.tasks.semantic_segmentation import decode_mask, dice_loss
from tests.conftest import cli, fit_on_training_set, with_overrides, write_spec


def segmentation_spec(**overrides: object) -> dict:
    spec = {
        "name": "seg-test",
        "task": "semantic_segmentation",
        "data": {"source": "builtin:shapes", "builtin": {"count": 30, "size": 64, "max_objects": 3},
                 "image_size": 64, "split": {"val": 0.2, "test": 0.2, "seed": 0}},
        "model": {"name": "unet", "kwargs": {"width": 8, "depth": 3}},
        "train": {"epochs": 2, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 3e-3}, "seed": 0},
    }
    return with_overrides(spec, overrides)


def test_dice_loss_matches_torchmetrics_on_hard_predictions() -> None:
    """With (almost) one-hot logits the soft Dice is the Dice score; compare with torchmetrics' F1 per class."""
    from torchmetrics.functional.classification import multiclass_f1_score

    rng = np.random.default_rng(0)
    target = torch.tensor(rng.integers(0, 3, size=(2, 16, 16)))
    pred = torch.where(torch.tensor(rng.random((2, 16, 16)) < 0.3), (target + 1) % 3, target)
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 100
    f1 = multiclass_f1_score(pred.flatten(), target.flatten(), 3, average="none")
    assert float(dice_loss(logits, target, 255, eps=0.0)) == pytest.approx(1 - float(f1.mean()), abs=1e-5)
    ignored = target.clone()
    ignored[:, :8] = 255  # ignored pixels count for no class
    f1_kept = multiclass_f1_score(pred[:, 8:].flatten(), target[:, 8:].flatten(), 3, average="none")
    assert float(dice_loss(logits, ignored, 255, eps=0.0)) == pytest.approx(1 - float(f1_kept.mean()), abs=1e-5)


@pytest.mark.parametrize("name", SEGMENTERS.names())
def test_every_segmenter_maps_images_to_logits(name: str) -> None:
    kwargs = {"width": 8} if name == "unet" else {}
    model = SEGMENTERS.get(name)(num_classes=4, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 4, 64, 96)
    assert len(list(model.backbone.parameters())) > 0


def test_unet_overfits_a_handful_of_images() -> None:
    history = fit_on_training_set(segmentation_spec(
        data={"builtin": {"count": 4, "size": 64, "max_objects": 2, "seed": 5, "object_size": [0.3, 0.5]},
              "split": {"val": 0.0, "test": 0.0}},
        train={"epochs": 150, "batch_size": 4, "optimizer": {"name": "adamw", "lr": 1e-2}, "seed": 0}))
    first, last = history[0], history[-1]
    assert last["train/loss"] < first["train/loss"] / 10
    assert first["val/miou"] < 0.4  # chance is about 1/4 with 4 classes
    assert last["val/miou"] > 0.9


def test_train_predict_masks_as_png_and_rle(tmp_path) -> None:
    spec = write_spec(tmp_path / "seg.yaml", segmentation_spec())
    cli("train", spec, "--runs-dir", tmp_path / "runs", check=True, timeout=600)
    run = dlforge.list_runs(tmp_path / "runs")[0]
    ev = run.read_eval()
    assert set(ev["metrics"]) == {"miou", "dice", "pixel_accuracy"}
    assert [c["class"] for c in ev["per_class"]] == ["background", "circle", "square", "triangle"]
    assert "Segmentation" in (run.path / "report.html").read_text()

    image = make_shapes(count=1, size=72, seed=7).images[0]  # not the training size: masks come back at 72x72
    Image.fromarray(image).save(tmp_path / "x.png")
    out = json.loads(cli("predict", run.path, tmp_path / "x.png", "--save-images", tmp_path / "ann",
                         check=True).stdout)[0]
    assert out["size"] == [72, 72]
    assert sum(out["pixels"].values()) == pytest.approx(1.0, abs=1e-4)
    classes = run.read_meta()["classes"]
    mask = decode_mask(out, classes)
    png = Image.open(tmp_path / "ann" / "x.mask.png")
    assert png.mode == "P" and np.array_equal(np.array(png), mask)  # the PNG holds class indexes
    predictor = dlforge.load(run.path)
    assert np.array_equal(predictor.outputs([image])[0].numpy(), mask)
    assert (tmp_path / "ann" / "x.overlay.png").exists()
