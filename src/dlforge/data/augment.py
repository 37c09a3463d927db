"""Augmentation for detection and segmentation: boxes and masks move exactly with the pixels.

A sample is `(image, target)`: image uint8 (3, H, W), target {"boxes": float (n, 4) xyxy pixels,
"labels": int64 (n,), and/or "masks": uint8 (H, W) class mask}. Geometric steps are
torchvision.transforms.v2 ones, which transform `tv_tensors` boxes and masks along with the
image; boxes leaving the image are clipped and slivers dropped with their labels. Exposed area is
black in the image and 255 (ignored by losses and metrics) in masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from pydantic import Field, field_validator
from torch import Tensor

from dlforge.data.images import resize_square
from dlforge.data.tiling import crop_boxes
from dlforge.spec import StrictModel

if TYPE_CHECKING:
    from torchvision.transforms import v2

Target = dict[str, Tensor]
Sample = tuple[Tensor, Target]
MIN_BOX_SIDE = 2.0  # px: boxes thinner than this after augmentation are dropped
MASK_FILL = 255  # mask value of area no source pixel covers (the ignore index)
MOSAIC_KEEP = 0.25  # a box cut by a mosaic quadrant keeps at least this fraction of its area


class DenseAugmentSpec(StrictModel):
    """Training-time augmentation of detection and segmentation data; off by default."""

    hflip: bool = Field(False, description="flip left-right with probability 0.5")
    vflip: bool = Field(False, description="flip upside down with probability 0.5 (aerial, microscopy images)")
    scale: tuple[float, float] | None = Field(
        None, description="zoom range, e.g. [0.5, 1.5]: each image is zoomed by a factor from it and shifted, "
                          "so that every part of it can reach the frame")
    color_jitter: float = Field(0.0, ge=0.0, le=1.0,
                                description="brightness, contrast and saturation jitter; hue by a tenth of it")
    mosaic: float = Field(0.0, ge=0.0, le=1.0,
                          description="probability of a 4-image mosaic (detection only)")

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, scale: tuple[float, float] | None) -> tuple[float, float] | None:
        if scale is not None and not 0.1 <= scale[0] <= scale[1] <= 4.0:
            raise ValueError(f"scale {list(scale)}: expected [low, high] with 0.1 <= low <= high <= 4")
        return scale

    def transform(self, mask_fill: int = MASK_FILL) -> DenseTransform | None:
        """The per-sample pipeline (flips, zoom, colour); None when nothing is on. Mosaic is not
        part of it: it needs other samples, so the dataset applies it first. `mask_fill`: the mask
        value of area a zoom-out exposes (the ignore index)."""
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        steps: list[v2.Transform] = []
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if self.vflip:
            steps.append(v2.RandomVerticalFlip())
        if self.scale is not None:
            low, high = self.scale
            # Zooming by s leaves (s - 1) / 2 of the side to reach on either side (in or out): shift that far.
            shift = min(1.0, max(high - 1.0, 1.0 - low) / 2)
            steps.append(v2.RandomAffine(0.0, (shift, shift) if shift else None, self.scale,
                                         interpolation=v2.InterpolationMode.BILINEAR,
                                         fill={tv_tensors.Image: 0, tv_tensors.Mask: mask_fill}))
        if self.color_jitter:
            j = self.color_jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 10))
        return DenseTransform(steps) if steps else None


class DenseTransform:
    """v2 steps applied to one (image, target) sample, then boxes clipped and slivers dropped.

    Boxes are sanitised on their own ("boxes" and "labels" only): v2's SanitizeBoundingBoxes would
    index a class mask (H, W) by the box filter whenever H happens to equal the number of boxes.
    Takes and returns plain tensors; they are wrapped as tv_tensors for the v2 steps.
    """

    def __init__(self, steps: list[v2.Transform]) -> None:
        from torchvision.transforms import v2

        self.steps = v2.Compose(steps)
        self.sanitize = v2.Compose([v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=MIN_BOX_SIDE)])

    def __call__(self, image: Tensor, target: Target) -> Sample:
        from torchvision import tv_tensors

        wrapped = dict(target)
        if "boxes" in target:
            wrapped["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY",
                                                        canvas_size=tuple(image.shape[-2:]))
        if "masks" in target:
            wrapped["masks"] = tv_tensors.Mask(target["masks"])
        image, wrapped = self.steps(tv_tensors.Image(image), wrapped)
        if "boxes" in wrapped:
            wrapped.update(self.sanitize({"boxes": wrapped["boxes"], "labels": wrapped["labels"]}))
        return image.as_subclass(Tensor), {k: v.as_subclass(Tensor) for k, v in wrapped.items()}


def resize_sample(image: Tensor, target: Target, side: int) -> Sample:
    """Plain (not letterboxed) resize of a sample to side x side: boxes scale by side/W and side/H,
    masks are resampled nearest-exact (the same pixel grid as the image's resize)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    height, width = image.shape[-2:]
    if (height, width) == (side, side):
        return image, target
    out = dict(target)
    if "boxes" in target:
        out["boxes"] = target["boxes"] * target["boxes"].new_tensor([side / width, side / height] * 2)
    if "masks" in target:
        out["masks"] = F.resize(target["masks"][None], [side, side], InterpolationMode.NEAREST_EXACT)[0]
    return resize_square(image, side), out


def mosaic(samples: Sequence[Sample], size: int, rng: torch.Generator | None = None) -> Sample:
    """Four samples -> one size x size sample, one image per quadrant around a random centre.

    YOLO-style, without the shrink: each image is resized to size x size and laid on a 2*size canvas
    with a corner at the mosaic centre; the size x size crop around that centre is the result. Each
    source thus shows a corner region at the scale it has at inference (scale jitter does the
    zooming); the centre lies in the middle half, so each quadrant is at least size/4 wide. Boxes are
    shifted and clipped to their quadrant; those keeping < 25% of their area or < 2 px are dropped.
    `rng` None: torch's global generator, which the DataLoader seeds per worker.
    """
    samples = [resize_sample(image, target, size) for image, target in samples]
    cx, cy = (size * (0.25 + 0.5 * torch.rand(2, generator=rng))).round().int().tolist()
    image = samples[0][0].new_zeros((3, size, size))
    first = samples[0][1].get("masks")
    masks = None if first is None else first.new_full((size, size), MASK_FILL)
    boxes, labels = [], []
    for (src, target), (col, row) in zip(samples, ((0, 0), (1, 0), (0, 1), (1, 1)), strict=True):
        x0, x1 = (cx, size) if col else (0, cx)  # the quadrant on the mosaic
        y0, y1 = (cy, size) if row else (0, cy)
        dx, dy = cx - size * (1 - col), cy - size * (1 - row)  # source pixel (x, y) lands at (x + dx, y + dy)
        image[:, y0:y1, x0:x1] = src[:, y0 - dy:y1 - dy, x0 - dx:x1 - dx]
        if masks is not None:
            masks[y0:y1, x0:x1] = target["masks"][y0 - dy:y1 - dy, x0 - dx:x1 - dx]
        b, k = crop_boxes(target["boxes"], target["labels"], (x0 - dx, y0 - dy, x1 - dx, y1 - dy),
                          MOSAIC_KEEP, MIN_BOX_SIDE)
        boxes.append(b + b.new_tensor([x0, y0, x0, y0]))
        labels.append(k)
    out = {"boxes": torch.cat(boxes), "labels": torch.cat(labels)}
    if masks is not None:
        out["masks"] = masks
    return image, out
