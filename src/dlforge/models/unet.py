"""U-Net (Ronneberger et al., 2015), written here: an encoder that halves the resolution `depth`
times, a decoder that doubles it back, and skip connections that carry the encoder's detail
across, so masks keep sharp borders.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from dlforge.registry import SEGMENTERS


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """(conv 3x3 -> BatchNorm -> ReLU) twice; the resolution is unchanged."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList([double_conv(in_channels, widths[0])])
        self.stages.extend(nn.Sequential(nn.MaxPool2d(2), double_conv(a, b)) for a, b in pairwise(widths))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []  # [(B, w0, H, W), (B, w1, H/2, W/2), ..., (B, w_d, H/2^d, W/2^d)]
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class Up(nn.Module):
    """Upsample x2 (transposed conv), concatenate the skip, double conv."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv = double_conv(c_out + c_skip, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))  # (B, c_out, 2h, 2w)


class UNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]  # e.g. 32, 64, 128, 256, 512
        self.downsampling = 2**depth  # H and W must be multiples of this
        self.backbone = Encoder(in_channels, widths)
        self.decoder = nn.ModuleList(Up(widths[i + 1], widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.class_specific = ("head.",)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        *skips, x = self.backbone(images)
        for up, skip in zip(self.decoder, reversed(skips), strict=True):
            x = up(x, skip)
        return self.head(x)  # (B, K, H, W) logits


@SEGMENTERS.register("unet")
def unet(num_classes: int, library_weights: bool = False, width: int = 32, depth: int = 4) -> UNet:
    """The U-Net written here; `width` channels at full resolution, doubling at each of `depth` levels."""
    if library_weights:
        from dlforge.errors import DlforgeError

        raise DlforgeError("model.pretrained: unet has no library weights; give a run directory or .safetensors")
    return UNet(num_classes, width=width, depth=depth)
