"""A small ResNet (He et al. 2016) for small images: 3x3 stem, three stages of basic blocks."""

from __future__ import annotations

import torch
from torch import nn

from dlforge.models.classifier import Classifier
from dlforge.registry import MODELS


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # A 1x1 projection when the shape changes, so the residual can be added.
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity: eases early training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """(B, C, H, W) -> (B, 4 * width). Stages at strides 1, 2, 4 of the stem's output."""

    def __init__(self, in_channels: int = 3, width: int = 32, blocks: tuple[int, int, int] = (1, 1, 1),
                 stem_stride: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages, c_in = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            stages.append(nn.Sequential(*[BasicBlock(c_in if j == 0 else c_out, c_out, 2 if i and j == 0 else 1)
                                          for j in range(n)]))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (B, 4w, H/4, W/4) for stem_stride 1
        return self.pool(x).flatten(1)  # (B, 4w)


@MODELS.register("resnet_small")
def resnet_small(num_classes: int, in_channels: int = 3, dropout: float = 0.0, library_weights: bool = False,
                 width: int = 32, blocks: tuple[int, int, int] = (1, 1, 1), stem_stride: int = 1) -> Classifier:
    """Small ResNet written here. `stem_stride: 2` suits images of 64 px and more."""
    if library_weights:
        raise ValueError("resnet_small has no library weights; use model.pretrained: <run dir or .safetensors>")
    backbone = ResNetSmall(in_channels, width, tuple(blocks), stem_stride)
    return Classifier(backbone, backbone.num_features, num_classes, dropout)
