"""Object detection: mAP against pycocotools, thresholds, overfitting a handful of images, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dlforge
from dlforge.data.shapes import make_shapes
from dlforge.registry import DETECTORS
from dlforge.spec import validate_spec
from dlforge.tasks.object_detection import detection_metrics, select
from tests.conftest import cli, fit_on_training_set, with_overrides, write_spec
from tests.data.test_detection_data import write_coco


def detection_spec(**overrides: object) -> dict:
    spec = {
        "name": "shapes-test",
        "task": "object_detection",
        "data": {"source": "builtin:shapes", "builtin": {"count": 40, "size": 64, "max_objects": 3},
                 "image_size": 64, "split": {"val": 0.2, "test": 0.2, "seed": 0}},
        "model": {"name": "yolo_n"},
        "train": {"epochs": 2, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 2e-3}, "seed": 0},
    }
    return with_overrides(spec, overrides)


def _noisy_predictions(seed: int = 0) -> tuple[list[dict], list[dict], list[str]]:
    """Ground truth from builtin shapes, and predictions near it: jittered hits, misses, false alarms."""
    data = make_shapes(count=25, size=96, seed=seed)
    rng = np.random.default_rng(seed)
    preds, truth = [], []
    for boxes, labels in zip(data.boxes, data.labels, strict=True):
        truth.append({"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)})
        found = rng.random(len(boxes)) > 0.15
        jitter = rng.normal(0, 1.5, size=boxes.shape) * found[:, None]
        p_boxes = [boxes[found] + jitter[found]]
        p_labels = [np.where(rng.random(found.sum()) < 0.1, (labels[found] + 1) % 3, labels[found])]
        extra = rng.integers(0, 3)
        xy = rng.uniform(0, 70, size=(extra, 2))
        p_boxes.append(np.concatenate([xy, xy + rng.uniform(8, 25, size=(extra, 2))], axis=1))
        p_labels.append(rng.integers(0, 3, size=extra))
        b = np.concatenate(p_boxes).astype(np.float32)
        preds.append({"boxes": torch.tensor(b), "labels": torch.tensor(np.concatenate(p_labels)).long(),
                      "scores": torch.tensor(rng.uniform(0.05, 1.0, size=len(b)), dtype=torch.float32)})
    return preds, truth, data.classes


def test_map_matches_pycocotools() -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    preds, truth, classes = _noisy_predictions()
    ours = detection_metrics(preds, truth, classes)

    def xywh(b: list[float]) -> list[float]:
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    images, annotations, results = [], [], []
    for i, (p, t) in enumerate(zip(preds, truth, strict=True)):
        images.append({"id": i, "width": 96, "height": 96})
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": label, "bbox": xywh(box),
                                "area": w * h, "iscrowd": 0})
        for box, label, score in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist(), strict=True):
            results.append({"image_id": i, "category_id": label, "bbox": xywh(box), "score": score})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": k, "name": c} for k, c in enumerate(classes)]}
    gt.createIndex()
    coco = COCOeval(gt, gt.loadRes(results), "bbox")
    coco.evaluate()
    coco.accumulate()
    coco.summarize()
    stats = coco.stats
    assert 0.1 < stats[0] < 0.95  # a non-trivial case: neither perfect nor empty
    for name, index in (("map", 0), ("map_50", 1), ("map_75", 2), ("mar_100", 8)):
        assert ours["metrics"][name] == pytest.approx(stats[index], abs=1e-6), name
    precision = coco.eval["precision"]  # (T, R, K, A, M)
    for k, row in enumerate(ours["per_class"]):
        p50 = precision[0, :, k, 0, -1]
        assert row["ap50"] == pytest.approx(p50[p50 > -1].mean(), abs=1e-6)
        p = precision[:, :, k, 0, -1]
        assert row["ap"] == pytest.approx(p[p > -1].mean(), abs=1e-6)


def test_select_applies_confidence_and_iou() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    det = {"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7, 0.2]), "labels": torch.tensor([0, 0, 1, 0])}
    out = select(det, conf=0.5, iou=0.5, max_det=10)
    # the overlapping box of the same class is suppressed; the other class survives; 0.2 is below conf
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7])
    assert out["labels"].tolist() == [0, 1]
    looser = select(det, conf=0.1, iou=0.95, max_det=10)
    assert len(looser["boxes"]) == 4
    assert len(select(det, conf=0.1, iou=0.95, max_det=2)["boxes"]) == 2


@pytest.mark.parametrize("name", DETECTORS.names())
def test_every_detector_trains_and_detects(name: str) -> None:
    """The shared interface: losses in training, candidates (boxes, scores, labels 0..K-1) in eval."""
    torch.manual_seed(0)
    model = DETECTORS.get(name)(num_classes=3, image_size=64)
    images = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det in out:
        assert det["boxes"].shape[1:] == (4,) and len(det["boxes"]) == len(det["scores"]) == len(det["labels"])
        assert ((det["labels"] >= 0) & (det["labels"] < 3)).all()


def test_yolo_overfits_a_handful_of_images() -> None:
    """Through the task and the Trainer: loss falls and mAP@0.5 on the same images rises far above chance."""
    # 4 images, one batch each epoch: 200 steps. (Objects of >= 19 px: at 64 px a 12 px object has one
    # stride-8 anchor, and the task-aligned assigner needs far more steps before it scores it.)
    builtin = {"count": 4, "size": 64, "max_objects": 2, "seed": 3, "object_size": [0.3, 0.5]}
    history = fit_on_training_set(detection_spec(
        data={"builtin": builtin, "split": {"val": 0.0, "test": 0.0}},
        train={"epochs": 200, "batch_size": 4, "optimizer": {"name": "adamw", "lr": 3e-3}, "seed": 0,
               "monitor": {"metric": "val/map_50"}}))
    first, last = history[0], history[-1]
    assert last["train/loss"] < first["train/loss"] / 3
    assert first["val/map_50"] < 0.2
    assert max(row["val/map_50"] for row in history) > 0.8


def test_train_predict_and_save_images(tmp_path) -> None:
    spec = write_spec(tmp_path / "det.yaml", detection_spec())
    cli("train", spec, "--runs-dir", tmp_path / "runs", check=True, timeout=600)
    run = dlforge.list_runs(tmp_path / "runs")[0]
    ev = run.read_eval()
    assert set(ev["metrics"]) >= {"map", "map_50", "map_75"} and 0.0 <= ev["metrics"]["map_50"] <= 1.0
    assert [c["class"] for c in ev["per_class"]] == ["circle", "square", "triangle"]
    assert "Detection" in (run.path / "report.html").read_text()
    assert (run.path / "plots" / "pr_curves.png").exists() and (run.path / "plots" / "detections.png").exists()

    images = make_shapes(count=2, size=80, seed=99).images
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"in{i}.png")
        Image.fromarray(image).save(paths[-1])
    out = cli("predict", run.path, *paths, "--conf", "0.0", "--iou", "0.5", "--save-images", tmp_path / "ann",
              check=True)
    predictions = json.loads(out.stdout)
    assert len(predictions) == 2
    for p in predictions:
        for o in p["objects"]:
            assert len(o["box"]) == 4 and o["label"] in ("circle", "square", "triangle") and 0 <= o["score"] <= 1
            assert 0 <= o["box"][0] <= o["box"][2] <= 80  # in the input image's own pixels
    assert sum(len(p["objects"]) for p in predictions) > 0  # conf 0: every candidate survives
    assert sorted(f.name for f in (tmp_path / "ann").iterdir()) == ["in0.boxes.png", "in1.boxes.png"]
    strict = json.loads(cli("predict", run.path, *paths, "--conf", "1.0", check=True).stdout)
    assert all(p["objects"] == [] for p in strict)
    bad = cli("predict", run.path, paths[0], "--conf", "2")
    assert bad.returncode == 2 and "conf" in bad.stderr and "Traceback" not in bad.stderr

    # new labelled data in another format: evaluated into <run>/evaluations/<name>/, the test eval untouched
    coco = write_coco(make_shapes(count=6, size=64, seed=42), tmp_path / "new")
    cli("evaluate", run.path, "--data", coco, check=True)
    new = json.loads((run.path / "evaluations" / coco.stem / "eval.json").read_text())
    assert new["n"] == 6 and new["data"] == str(coco)
    assert run.read_eval() == ev


@pytest.mark.parametrize("name", ["yolo_n", "fasterrcnn_mobilenet_v3_large_fpn"])
def test_pretrained_keeps_the_backbone_and_renews_the_class_head(tmp_path, name: str) -> None:
    """Starting from a checkpoint trained on other labels (as many of them): every tensor but the class head loads."""
    from safetensors.torch import save_model

    from dlforge.models.pretrained import load_pretrained

    source = DETECTORS.get(name)(num_classes=3, image_size=64)
    save_model(source, str(tmp_path / "source.safetensors"))
    target = DETECTORS.get(name)(num_classes=3, image_size=64)
    report = load_pretrained(target, str(tmp_path / "source.safetensors"), ["cat", "dog", "fox"])
    assert report["fresh"] and all(k.startswith(tuple(target.class_specific)) for k in report["fresh"])
    loaded = {k: v for k, v in target.state_dict().items() if k not in report["fresh"]}
    reference = source.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.items())
    assert any(not torch.equal(target.state_dict()[k], reference[k]) for k in report["fresh"] if "weight" in k)


def test_tiled_training_and_sliced_prediction(tmp_path) -> None:
    """Large images: training sees tile-sized inputs; predictions come back in the large image's pixels."""
    builtin = {"count": 10, "size": 256, "min_objects": 6, "max_objects": 10, "object_size": [0.06, 0.12]}
    spec = validate_spec(detection_spec(data={"builtin": builtin, "image_size": 128,
                                              "tiling": {"tile": 128, "overlap": 0.25}},
                                        train={"epochs": 1}))
    run = dlforge.train(spec, runs_dir=tmp_path, progress=False)
    assert run.read_meta()["preprocessing"]["tiling"] == {"tile": 128, "overlap": 0.25}
    predictor = dlforge.load(run.path)
    assert predictor.task.prepare().train[0][0].shape == (3, 128, 128)  # a tile, not the whole image
    image = make_shapes(count=1, size=256, seed=11, min_objects=8, max_objects=8, object_size=(0.06, 0.12)).images[0]
    objects = predictor.predict([image], conf=0.0)[0]["objects"]
    boxes = np.array([o["box"] for o in objects])
    assert len(boxes) and (boxes >= 0).all() and (boxes <= 256).all()
    assert boxes[:, 2].max() > 128 and boxes[:, 3].max() > 128  # tiles beyond the first are mapped back
