"""The YOLO-style detector: shapes and interface, the task-aligned assigner, box decoding against torchvision's
FCOS box coder, DFL against PyTorch's soft-target cross-entropy, and an overfit run scored with torchmetrics' mAP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models.detection._utils import BoxLinearCoder

from dlforge.errors import DlforgeError
from dlforge.models.yolo import (
    REG_MAX,
    TaskAlignedAssigner,
    YOLODetector,
    box_to_distances,
    decode_boxes,
    dfl_loss,
    make_anchors,
    yolo_n,
    yolo_s,
)
from dlforge.registry import DETECTORS


def no_targets(batch: int) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in range(batch)]


def test_sizes_shapes_and_interface() -> None:
    assert DETECTORS.get("yolo_n") is yolo_n and DETECTORS.get("yolo_s") is yolo_s
    torch.manual_seed(0)
    small, large = yolo_n(num_classes=3, image_size=96), yolo_s(num_classes=3, image_size=96)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(large) > 2 * count(small)
    assert small.strides == (8, 16, 32) and small.num_classes == 3 and isinstance(small.backbone, torch.nn.Module)

    images = torch.rand(2, 3, 64, 96)
    small.eval()
    with torch.no_grad():
        feats = small.head(small.neck(*small.backbone(images)))
        assert [tuple(f.shape) for f in feats] == [(2, 4 * REG_MAX + 3, 64 // s, 96 // s) for s in (8, 16, 32)]
        raw = small.forward_raw(images)
        detections = small(images)
    assert raw.shape == (2, 8 * 12 + 4 * 6 + 2 * 3, 4 + 3)
    assert ((raw[..., 4:] >= 0) & (raw[..., 4:] <= 1)).all()
    assert (raw[..., [0, 2]] >= 0).all() and (raw[..., [0, 2]] <= 96).all() and (raw[..., [1, 3]] <= 64).all()
    assert len(detections) == 2
    for d in detections:
        m = len(d["scores"])
        assert 0 < m <= small.max_det
        assert d["boxes"].shape == (m, 4) and d["boxes"].dtype == torch.float32
        assert d["labels"].dtype == torch.int64 and d["scores"].dtype == torch.float32
        assert ((d["labels"] >= 0) & (d["labels"] < 3)).all() and (d["scores"] >= small.score_thresh).all()
        assert (d["scores"].diff() <= 0).all()

    # training: a batch with no objects at all, then one with an empty image beside a full one
    small.train()
    for targets in (no_targets(2), [no_targets(1)[0], {"boxes": torch.tensor([[8.0, 8, 40, 30]]),
                                                       "labels": torch.tensor([2])}]):
        losses = small(images, targets)
        assert set(losses) == {"loss_box", "loss_cls", "loss_dfl"}
        total = sum(losses.values())
        assert total.ndim == 0 and torch.isfinite(total) and total > 0
        total.backward()
    assert all(torch.isfinite(p.grad).all() for p in small.parameters() if p.grad is not None)

    with pytest.raises(ValueError, match="multiples of 32"):
        small(torch.rand(1, 3, 64, 80), no_targets(1))
    with pytest.raises(DlforgeError, match="yolo_n has no library weights"):
        yolo_n(num_classes=3, image_size=96, library_weights=True)


def test_assigner_hand_made_boxes() -> None:
    torch.manual_seed(0)
    anchors, _ = make_anchors([(8, 8), (4, 4), (2, 2)], (8, 16, 32), torch.device("cpu"))  # a 64x64 image
    # the first two overlap; the last one is too small to hold an anchor centre (widened to 16 px for the test)
    gt_boxes = torch.tensor([[2.0, 3, 30, 25], [20, 15, 60, 60], [40, 2, 52, 14], [50, 50, 55, 55]])
    gt_labels = torch.tensor([0, 1, 1, 0])
    scores = torch.rand(len(anchors), 2)
    centre, half = anchors + torch.randn_like(anchors) * 4, torch.rand_like(anchors) * 20 + 4
    pred_boxes = torch.cat([centre - half, centre + half], 1)
    target_boxes, target_scores, positive = TaskAlignedAssigner(topk=10)(scores, pred_boxes, anchors, gt_boxes,
                                                                         gt_labels)
    assert positive.shape == (4, len(anchors))
    assert positive.any(1).all()  # every GT has a positive anchor
    assert (positive.sum(0) <= 1).all()  # no anchor has two GTs
    assert (positive.sum(1) <= 10).all()  # at most top-k per GT
    for j, a in positive.nonzero().tolist():
        (x, y), box = anchors[a], gt_boxes[j] if j < 3 else torch.tensor([44.5, 44.5, 60.5, 60.5])
        assert box[0] < x < box[2] and box[1] < y < box[3]  # the anchor centre is inside its GT
        assert torch.equal(target_boxes[a], gt_boxes[j])
        assert target_scores[a].argmax() == gt_labels[j] and 0 < target_scores[a].max() <= 1
    assert (target_scores[~positive.any(0)] == 0).all()  # background anchors: no class target

    # conflict: the anchor at (20, 20) lies in both boxes; its predicted box equals box 1, so it goes to box 1
    anchors = torch.tensor([[10.0, 10], [20, 20], [30, 30]])
    gt_boxes = torch.tensor([[0.0, 0, 25, 25], [15, 15, 40, 40]])
    pred_boxes = torch.tensor([[0.0, 0, 20, 20], [15, 15, 40, 40], [22, 22, 38, 38]])
    _, target_scores, positive = TaskAlignedAssigner(topk=10)(torch.full((3, 2), 0.5), pred_boxes, anchors,
                                                              gt_boxes, torch.tensor([0, 1]))
    assert positive.tolist() == [[True, False, False], [False, True, True]]
    assert target_scores[1].tolist() == [0.0, 1.0]  # its IoU with box 1 is 1, and it is box 1's best anchor

    empty = TaskAlignedAssigner()(scores[:3], pred_boxes, anchors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert empty[2].shape == (0, 3) and (empty[1] == 0).all()


def test_decoding_and_dfl_match_torch_references() -> None:
    torch.manual_seed(0)
    anchors, strides = make_anchors([(4, 6), (2, 3), (1, 2)], (8, 16, 32), torch.device("cpu"))
    assert anchors[:2].tolist() == [[4.0, 4.0], [12.0, 4.0]] and anchors[-1].tolist() == [48.0, 16.0]
    distances = torch.rand(len(anchors), 4) * (REG_MAX - 1.5)  # ltrb, in strides, fractional
    # logits for the two-bin distribution around each distance: its expectation is the distance
    left = distances.long()
    probs = F.one_hot(left, REG_MAX) * (left + 1 - distances)[..., None] + \
        F.one_hot(left + 1, REG_MAX) * (distances - left)[..., None]  # (A, 4, REG_MAX)
    logits = probs.clamp(min=1e-12).log()
    boxes = decode_boxes(logits.flatten(1), anchors, strides)  # (A, 4)

    # torchvision's FCOS coder: ltrb offsets normalised by the size of an anchor box of one stride
    anchor_boxes = torch.cat([anchors - strides / 2, anchors + strides / 2], 1)
    coder = BoxLinearCoder(normalize_by_size=True)
    torch.testing.assert_close(boxes, coder.decode(distances, anchor_boxes), rtol=0, atol=1e-4)
    torch.testing.assert_close(box_to_distances(anchors, boxes, strides), coder.encode(anchor_boxes, boxes))
    torch.testing.assert_close(box_to_distances(anchors, boxes, strides), distances, rtol=0, atol=1e-4)

    # DFL is cross-entropy to the two-bin soft target: compare with PyTorch's probability-target cross-entropy
    random_logits = torch.randn(len(anchors), 4, REG_MAX)
    expected = F.cross_entropy(random_logits.flatten(0, 1), probs.flatten(0, 1), reduction="none").view(-1, 4)
    torch.testing.assert_close(dfl_loss(random_logits, distances), expected.mean(1))
    # and it is smallest at the target distribution itself, where it equals that distribution's entropy
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum(-1).mean(1)
    torch.testing.assert_close(dfl_loss(logits, distances), entropy, rtol=0, atol=1e-4)
    assert (dfl_loss(logits, distances) < dfl_loss(random_logits, distances)).all()


def synthetic_images(n: int, size: int, seed: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Filled rectangles (class 0) and discs (class 1) of random colours on a dark noisy background."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        image = rng.uniform(0, 0.2, (size, size, 3))
        boxes, labels = [], []
        for _ in range(rng.integers(1, 4)):
            for _ in range(50):  # place without overlapping earlier objects
                w = int(rng.integers(14, 28))
                x0, y0 = (int(v) for v in rng.integers(0, size - w, 2))
                if all(x0 >= b[2] + 2 or x0 + w <= b[0] - 2 or y0 >= b[3] + 2 or y0 + w <= b[1] - 2 for b in boxes):
                    break
            label = int(rng.integers(0, 2))
            if label == 0:
                mask = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + w)
            else:
                mask = (xx + 0.5 - x0 - w / 2) ** 2 + (yy + 0.5 - y0 - w / 2) ** 2 <= (w / 2) ** 2
            image[mask] = rng.uniform(0.5, 1.0, 3)
            boxes.append([x0, y0, x0 + w, y0 + w])
            labels.append(label)
        images.append(torch.tensor(image, dtype=torch.float32).permute(2, 0, 1))
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return torch.stack(images), targets


def test_overfit_yolo_n() -> None:
    torch.manual_seed(0)
    images, targets = synthetic_images(4, 64, seed=0)
    model: YOLODetector = yolo_n(num_classes=2, image_size=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(300):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first / 5, (first, last)

    model.eval()
    with torch.no_grad():
        detections = model(images)
    metric = MeanAveragePrecision(iou_thresholds=[0.5])
    metric.update(detections, targets)
    assert metric.compute()["map"] > 0.8
