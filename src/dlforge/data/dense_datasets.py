"""Torch datasets for detection and segmentation: square model inputs with boxes or masks that match.

Images are plain-resized (not letterboxed) to S x S, boxes scaled by S/W and S/H, masks resampled
nearest. Augmentation (training only) runs after the resize, at the model's resolution, as YOLO
does: a zoom or a mosaic of four 4000 px photos would otherwise cost far more than the training step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dlforge.data.augment import DenseAugmentSpec, Sample, mosaic, resize_sample
from dlforge.data.detection import DetectionSet, SegmentationSet
from dlforge.data.images import to_uint8_tensor
from dlforge.data.tiling import Window, crop_boxes, tile_windows
from dlforge.errors import DataError


class DetectionDataset(Dataset):
    """(image float (3, S, S) in [0, 1], {"boxes": float (n, 4) xyxy in S x S pixels, "labels": int64 (n,)}).

    With `tiling=(tile, overlap)` the items are the windows of every image (see `tiling.tile_windows`),
    each with the boxes that keep >= 50% of their area in it, clipped. When training (`augment` given),
    windows without objects are subsampled to at most as many as windows with objects (at least one),
    chosen once with `seed`: on sparse large images they would otherwise outnumber the rest and teach
    mostly "nothing here". Evaluation keeps every window. Mosaic picks its three other items with torch's
    global generator, which the DataLoader seeds, so an epoch is reproducible.
    """

    def __init__(self, data: DetectionSet, image_size: int, augment: DenseAugmentSpec | None = None,
                 seed: int = 0, tiling: tuple[int, float] | None = None) -> None:
        self.data, self.size = data, image_size
        self.augment = augment.transform() if augment is not None else None
        self.mosaic = augment.mosaic if augment is not None else 0.0
        self.items: list[tuple[int, Window | None]] = [(i, None) for i in range(len(data))] if tiling is None \
            else _tile_items(data, *tiling, subsample_empty=augment is not None, seed=seed)
        self._last: tuple[int, Tensor] | None = None  # (index, uint8 (3, H, W)): tiles of one image in a row

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self._sample(i)
        if self.mosaic and float(torch.rand(())) < self.mosaic:
            others = torch.randint(len(self), (3,)).tolist()
            image, target = mosaic([(image, target), *(self._sample(j) for j in others)], self.size)
        if self.augment is not None:
            image, target = self.augment(image, target)
        return image.float() / 255, {"boxes": target["boxes"].float(), "labels": target["labels"].long()}

    @staticmethod
    def collate(batch: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """Images stack to (B, 3, S, S); targets stay a list, as their box counts differ."""
        images, targets = zip(*batch, strict=True)
        return torch.stack(images), list(targets)

    def _sample(self, i: int) -> Sample:
        """Item i as uint8 (3, S, S) with its boxes and labels, cut to its tile and resized."""
        index, window = self.items[i]
        image = self._image(index)
        boxes, labels = _boxes(self.data, index)
        if window is not None:
            x0, y0, x1, y1 = window
            image = image[:, y0:y1, x0:x1]
            boxes, labels = crop_boxes(boxes, labels, window)
        return resize_sample(image, {"boxes": boxes, "labels": labels}, self.size)

    def _image(self, index: int) -> Tensor:
        if self._last is None or self._last[0] != index:
            self._last = (index, to_uint8_tensor(self.data.images[index], 3))
        return self._last[1]


def _boxes(data: DetectionSet, index: int) -> tuple[Tensor, Tensor]:
    """(n, 4) float32 xyxy and (n,) int64 of one image."""
    boxes = torch.as_tensor(np.asarray(data.boxes[index], dtype=np.float32)).reshape(-1, 4)
    return boxes, torch.as_tensor(np.asarray(data.labels[index], dtype=np.int64)).reshape(-1)


def _tile_items(data: DetectionSet, tile: int, overlap: float, subsample_empty: bool,
                seed: int) -> list[tuple[int, Window]]:
    """(image index, window) of every tile, in image order (consecutive tiles share a decoded image)."""
    full, empty = [], []
    for index, (height, width) in enumerate(data.sizes):
        boxes, labels = _boxes(data, index)
        for window in tile_windows(height, width, tile, overlap):
            (full if len(crop_boxes(boxes, labels, window)[1]) else empty).append((index, window))
    if subsample_empty and len(empty) > max(len(full), 1):
        pick = np.random.default_rng(seed).choice(len(empty), max(len(full), 1), replace=False)
        empty = [empty[k] for k in pick]
    return sorted(full + empty)


class SegmentationDataset(Dataset):
    """(image float (3, S, S) in [0, 1], class mask int64 (S, S)); exposed area after a zoom-out is
    the set's ignore index in the mask."""

    def __init__(self, data: SegmentationSet, image_size: int, augment: DenseAugmentSpec | None = None) -> None:
        self.data, self.size = data, image_size
        self.augment = augment.transform(mask_fill=data.ignore_index) if augment is not None else None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = to_uint8_tensor(self.data.images[i], 3)
        mask = _read_mask(self.data.masks[i])
        if mask.shape != image.shape[1:]:
            where = self.data.masks[i] if isinstance(self.data.masks[i], Path) else f"mask {i}"
            raise DataError(f"{where}: mask of {tuple(mask.shape)} for an image of {tuple(image.shape[1:])} (H, W)")
        image, target = resize_sample(image, {"masks": mask}, self.size)
        if self.augment is not None:
            image, target = self.augment(image, target)
        return image.float() / 255, target["masks"].long()


def _read_mask(item: Any) -> Tensor:
    """A mask file (read by the segmentation readers' own rules) or an (H, W) array -> uint8 (H, W)."""
    if isinstance(item, str | Path):
        from dlforge.data.detection import read_mask

        item = read_mask(Path(item))
    return torch.tensor(np.asarray(item, dtype=np.uint8))  # a copy: arrays may be read-only
