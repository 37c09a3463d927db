"""torchvision's DeepLabV3 and LR-ASPP behind dlforge's segmenter interface: float images
(B, 3, H, W) in [0, 1] -> logits (B, K, H, W), with `.backbone` for freezing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dlforge.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from dlforge.registry import SEGMENTERS


class TorchvisionSegmenter(nn.Module):
    def __init__(self, model: nn.Module, class_specific: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.class_specific = class_specific  # the last convolutions, tied to the label set
        # torchvision's backbones expect ImageNet-normalised pixels; keep that inside the model.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)["out"]  # (B, K, H, W), upsampled to the input


DEEPLAB_LAST = ("model.classifier.4.",)
LRASPP_LAST = ("model.classifier.low_classifier.", "model.classifier.high_classifier.")


def _build(builder: Callable[..., nn.Module], num_classes: int, library_weights: bool, last: tuple[str, ...],
           **kwargs: Any) -> TorchvisionSegmenter:
    # library_weights: ImageNet weights for the backbone; the segmentation head always starts fresh.
    model = builder(weights=None, weights_backbone="DEFAULT" if library_weights else None, num_classes=num_classes,
                    **kwargs)
    return TorchvisionSegmenter(model, last)


@SEGMENTERS.register("deeplabv3_resnet50")
def deeplabv3_resnet50(num_classes: int, library_weights: bool = False, **kwargs: Any) -> TorchvisionSegmenter:
    """DeepLabV3 (atrous spatial pyramid pooling), ResNet-50 backbone."""
    from torchvision.models import segmentation

    return _build(segmentation.deeplabv3_resnet50, num_classes, library_weights, DEEPLAB_LAST, **kwargs)


@SEGMENTERS.register("deeplabv3_mobilenet_v3_large")
def deeplabv3_mobilenet_v3_large(num_classes: int, library_weights: bool = False,
                                 **kwargs: Any) -> TorchvisionSegmenter:
    """DeepLabV3, MobileNetV3-Large backbone."""
    from torchvision.models import segmentation

    return _build(segmentation.deeplabv3_mobilenet_v3_large, num_classes, library_weights, DEEPLAB_LAST, **kwargs)


@SEGMENTERS.register("lraspp_mobilenet_v3_large")
def lraspp_mobilenet_v3_large(num_classes: int, library_weights: bool = False,
                              **kwargs: Any) -> TorchvisionSegmenter:
    """LR-ASPP (lite reduced ASPP), MobileNetV3-Large: the fast one."""
    from torchvision.models import segmentation

    return _build(segmentation.lraspp_mobilenet_v3_large, num_classes, library_weights, LRASPP_LAST, **kwargs)
