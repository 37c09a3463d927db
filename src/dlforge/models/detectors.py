"""torchvision's detectors (Faster R-CNN, RetinaNet, FCOS) behind dlforge's detector interface.

Every detector here, like the YOLO-style one, takes images as a float (B, 3, H, W) tensor in
[0, 1] and labels 0..K-1 without a background class:
- training: `model(images, targets)` -> a dict of scalar losses;
- eval: `model(images)` -> per image {boxes (m, 4) xyxy, scores (m,), labels (m,)}: *candidates*
  (score >= 0.001, class-wise NMS at a lenient IoU of 0.7); the task applies the user's
  confidence and IoU thresholds on top, so one model serves every threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dlforge.registry import DETECTORS

SCORE_THRESH, NMS_THRESH, MAX_DET = 0.001, 0.7, 300


class TorchvisionDetector(nn.Module):
    """A torchvision detection model; R-CNN models count the background as class 0, so labels shift by one."""

    def __init__(self, model: nn.Module, label_offset: int, class_specific: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.label_offset = label_offset
        self.class_specific = class_specific  # parameters tied to the label set: renewed for other labels

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone  # (body + FPN): what `train.freeze_backbone_epochs` freezes

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        # torchvision normalises (ImageNet statistics) and batches a list itself; min = max size = input size,
        # so it does not resize.
        if self.training:
            shifted = [{"boxes": t["boxes"], "labels": t["labels"] + self.label_offset} for t in targets]
            return self.model(list(images), shifted)
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - self.label_offset}
                for d in self.model(list(images))]


def _build(builder: Callable[..., nn.Module], num_classes: int, image_size: int, library_weights: bool,
           thresholds: dict[str, Any], **kwargs: Any) -> nn.Module:
    # library_weights: the full COCO detector, whose class-specific head is then replaced.
    common = {"min_size": image_size, "max_size": image_size, **thresholds, **kwargs}
    if library_weights:
        return builder(weights="DEFAULT", **common)
    return builder(weights=None, weights_backbone=None, num_classes=num_classes, **common)


def _faster_rcnn(builder: Callable[..., nn.Module], num_classes: int, image_size: int, library_weights: bool,
                 **kwargs: Any) -> TorchvisionDetector:
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    thresholds = {"box_score_thresh": SCORE_THRESH, "box_nms_thresh": NMS_THRESH, "box_detections_per_img": MAX_DET}
    model = _build(builder, num_classes + 1, image_size, library_weights, thresholds, **kwargs)
    if library_weights:
        predictor = model.roi_heads.box_predictor
        model.roi_heads.box_predictor = FastRCNNPredictor(predictor.cls_score.in_features, num_classes + 1)
    return TorchvisionDetector(model, 1, ("model.roi_heads.box_predictor.",))


def _dense(builder: Callable[..., nn.Module], head: Callable[..., nn.Module], num_classes: int, image_size: int,
           library_weights: bool, **kwargs: Any) -> TorchvisionDetector:
    thresholds = {"score_thresh": SCORE_THRESH, "nms_thresh": NMS_THRESH, "detections_per_img": MAX_DET}
    model = _build(builder, num_classes, image_size, library_weights, thresholds, **kwargs)
    if library_weights:
        anchors = model.anchor_generator.num_anchors_per_location()[0]
        in_channels = model.head.classification_head.cls_logits.in_channels
        model.head.classification_head = head(in_channels, anchors, num_classes)
    return TorchvisionDetector(model, 0, ("model.head.classification_head.cls_logits.",))


@DETECTORS.register("fasterrcnn_resnet50_fpn")
def fasterrcnn_resnet50_fpn(num_classes: int, image_size: int, library_weights: bool = False,
                            **kwargs: Any) -> TorchvisionDetector:
    """Faster R-CNN, ResNet-50-FPN backbone (two-stage: region proposals, then RoI heads)."""
    from torchvision.models import detection

    return _faster_rcnn(detection.fasterrcnn_resnet50_fpn, num_classes, image_size, library_weights, **kwargs)


@DETECTORS.register("fasterrcnn_mobilenet_v3_large_fpn")
def fasterrcnn_mobilenet_v3_large_fpn(num_classes: int, image_size: int, library_weights: bool = False,
                                      **kwargs: Any) -> TorchvisionDetector:
    """Faster R-CNN, MobileNetV3-Large-FPN backbone: the CPU-friendly two-stage detector."""
    from torchvision.models import detection

    return _faster_rcnn(detection.fasterrcnn_mobilenet_v3_large_fpn, num_classes, image_size, library_weights,
                        **kwargs)


@DETECTORS.register("retinanet_resnet50_fpn")
def retinanet_resnet50_fpn(num_classes: int, image_size: int, library_weights: bool = False,
                           **kwargs: Any) -> TorchvisionDetector:
    """RetinaNet (one-stage, anchors, focal loss), ResNet-50-FPN."""
    from torchvision.models import detection
    from torchvision.models.detection.retinanet import RetinaNetClassificationHead

    return _dense(detection.retinanet_resnet50_fpn, RetinaNetClassificationHead, num_classes, image_size,
                  library_weights, **kwargs)


@DETECTORS.register("fcos_resnet50_fpn")
def fcos_resnet50_fpn(num_classes: int, image_size: int, library_weights: bool = False,
                      **kwargs: Any) -> TorchvisionDetector:
    """FCOS (one-stage, anchor-free, centre-ness), ResNet-50-FPN."""
    from torchvision.models import detection
    from torchvision.models.detection.fcos import FCOSClassificationHead

    return _dense(detection.fcos_resnet50_fpn, FCOSClassificationHead, num_classes, image_size, library_weights,
                  **kwargs)
