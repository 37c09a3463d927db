"""Tiles for large images with many small objects: train on windows, predict slice by slice.

A small object in a 4000 px image vanishes when the image is shrunk to the model's input, so
both training and inference look at overlapping windows at (nearly) full resolution. An object
cut by a window border then shows up twice at inference, whole in one window and cut in its
neighbour; `merge_detections` joins such pairs (greedy non-maximum merging, as SAHI does).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from dlforge.data.images import resize_square

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, end exclusive


def tile_windows(height: int, width: int, tile: int, overlap: float) -> list[Window]:
    """Windows of tile x tile px covering the image, neighbours sharing round(overlap * tile) px.

    The last row and column are shifted inward to end at the border, so no window is cut short
    (the overlap there is larger); a side shorter than `tile` gives one window of that side.
    """
    if tile < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile {tile} must be >= 1 and overlap {overlap} in [0, 1)")
    stride = max(1, tile - round(overlap * tile))
    xs, ys = _starts(width, tile, stride), _starts(height, tile, stride)
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    return [*range(0, length - tile, stride), length - tile]


def crop_boxes(boxes: Tensor, labels: Tensor, window: Window, min_visibility: float = 0.5,
               min_size: float = 0.0) -> tuple[Tensor, Tensor]:
    """Boxes (n, 4) xyxy cut to `window`, in the window's own pixels, with their labels (n,).

    A box is kept when at least `min_visibility` of its area lies inside and its clipped sides are
    both at least `min_size`: a sliver of an object at a border is no example of that object.
    """
    x0, y0, x1, y1 = window
    clipped = torch.stack([boxes[:, 0].clamp(x0, x1), boxes[:, 1].clamp(y0, y1),
                           boxes[:, 2].clamp(x0, x1), boxes[:, 3].clamp(y0, y1)], dim=1)  # (n, 4)
    size = clipped[:, 2:] - clipped[:, :2]  # (n, 2): w, h
    area = (boxes[:, 2:] - boxes[:, :2]).prod(1)  # (n,)
    keep = (size.prod(1) >= min_visibility * area) & (size >= min_size).all(1) & (size > 0).all(1)
    offset = clipped.new_tensor([x0, y0, x0, y0])
    return clipped[keep] - offset, labels[keep]


def merge_detections(boxes: Tensor, scores: Tensor, labels: Tensor,
                     match_threshold: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy non-maximum merging: one box per object seen by several overlapping tiles.

    By descending score, each remaining box absorbs every other remaining box of its class whose
    intersection over the smaller area (IoS) with it exceeds `match_threshold`: the result is their
    union with the best score. IoS, unlike IoU, is high for a partial box inside the whole one, so an
    object cut by a tile border comes out once, with its full extent.
    boxes (N, 4) xyxy, scores (N,), labels (N,) -> the merged (M, 4), (M,), (M,), by descending score.
    """
    order = scores.argsort(descending=True)
    boxes, scores, labels = boxes[order].float(), scores[order], labels[order]
    near = _matches(boxes, labels, match_threshold)
    corners = boxes.cpu().numpy()  # (N, 4)
    free = np.ones(len(boxes), bool)
    merged, kept = [], []
    for i in range(len(boxes)):
        if not free[i]:
            continue
        group = np.append(near[i][free[near[i]]], i)
        free[group] = False
        merged.append(np.concatenate([corners[group, :2].min(0), corners[group, 2:].max(0)]))
        kept.append(i)
    index = torch.tensor(kept, dtype=torch.long, device=scores.device)
    merged_boxes = torch.tensor(np.array(merged, np.float32).reshape(-1, 4), device=boxes.device)
    return merged_boxes, scores[index], labels[index]


def _matches(boxes: Tensor, labels: Tensor, threshold: float, chunk: int = 1024) -> list[np.ndarray]:
    """Per box, the indexes of the boxes of its class with IoS above `threshold` (sparse: a few each).

    IoS from torchvision's IoU: iou = inter / (a1 + a2 - inter), so inter = iou * (a1 + a2) / (1 + iou).
    Computed class by class, in chunks of rows: the pairs are the cost, (N, N) floats at worst.
    """
    from torchvision.ops import box_area, box_iou

    area = box_area(boxes)  # (N,)
    near: list[np.ndarray] = [np.zeros(0, np.int64)] * len(boxes)
    for label in labels.unique():
        members = (labels == label).nonzero()[:, 0]  # (n,)
        for start in range(0, len(members), chunk):
            rows = members[start:start + chunk]  # (r,)
            iou = box_iou(boxes[rows], boxes[members])  # (r, n)
            a1, a2 = area[rows, None], area[members]
            hit = iou * (a1 + a2) / (1 + iou) / torch.minimum(a1, a2).clamp_min(1e-9) > threshold  # (r, n)
            columns = members[hit.nonzero()[:, 1]].cpu().numpy()  # row-major: row by row
            for row, found in zip(rows.tolist(), np.split(columns, hit.sum(1).cumsum(0)[:-1].cpu().numpy()),
                                  strict=True):
                near[row] = found
    return near


def sliced_predict(image: Tensor, predict_fn: Callable[[Tensor], list[dict[str, Tensor]]], tile: int,
                   overlap: float, image_size: int, batch_size: int = 16, min_score: float = 0.05,
                   match_threshold: float = 0.5) -> dict[str, Tensor]:
    """Detect on a large image tile by tile and merge the tiles' detections.

    image: float (3, H, W); predict_fn: tiles (T, 3, S, S) -> per tile {boxes (m, 4) xyxy in tile-input
    pixels, scores (m,), labels (m,)}. Each window is resized to S = image_size, as in training.
    Detections scoring below `min_score` are dropped before merging: merging takes the union of
    matched boxes, so faint candidates overlapping an object would widen its box (0.05 is
    torchvision's own floor for detection candidates). There is no extra full-image pass: tiling is
    for objects smaller than the overlap, which some window always sees whole.
    Returns {boxes (M, 4) in image pixels, scores (M,), labels (M,)} on the image's device.
    """
    from torchvision.ops import clip_boxes_to_image

    height, width = image.shape[-2:]
    windows = tile_windows(height, width, tile, overlap)
    found: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        tiles = torch.stack([resize_square(image[:, y0:y1, x0:x1], image_size) for x0, y0, x1, y1 in chunk])
        for det, window in zip(predict_fn(tiles), chunk, strict=True):
            keep = det["scores"] >= min_score
            found.append((_to_image(det["boxes"][keep].float().cpu(), window, image_size),
                          det["scores"][keep].cpu(), det["labels"][keep].cpu()))
    boxes, scores, labels = (torch.cat(parts) for parts in zip(*found, strict=True))
    boxes, scores, labels = merge_detections(clip_boxes_to_image(boxes, (height, width)), scores, labels,
                                             match_threshold)
    return {"boxes": boxes.to(image.device), "scores": scores.to(image.device), "labels": labels.to(image.device)}


def _to_image(boxes: Tensor, window: Window, side: int) -> Tensor:
    """Boxes (m, 4) in a tile's S x S input pixels -> the image's pixels."""
    x0, y0, x1, y1 = window
    scale = boxes.new_tensor([(x1 - x0) / side, (y1 - y0) / side] * 2)
    return boxes * scale + boxes.new_tensor([x0, y0, x0, y0])
