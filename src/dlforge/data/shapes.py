"""`builtin:shapes`: a synthetic detection and segmentation set of circles, squares and triangles.

Seeded and deterministic, generated in memory in about a millisecond per 128x128 image, so
tests, benchmarks and first runs need no download. Backgrounds are textured (noise, gradients,
stripes, checks) and every object gets a random colour far from its background's colours, so a
model must learn shape, not colour. Objects may touch but barely overlap, and every box is the
tight bounding box of the object's *visible* pixels: `[x1, y1, x2, y2]` with x2, y2 one past the
last pixel, exactly what the class mask shows.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from dlforge.data.detection import DetectionSet, SegmentationSet, as_segmentation
from dlforge.errors import DataError
from dlforge.registry import DATASETS

CLASSES = ["circle", "square", "triangle"]
MAX_OVERLAP = 0.1  # of the smaller box: larger overlaps would hide too much of an object
PLACEMENT_TRIES = 60
MIN_CONTRAST = 90.0  # RGB distance of an object's colour from its background's colours


@DATASETS.register("shapes")
def make_shapes(count: int = 600, size: int = 128, seed: int = 0, min_objects: int = 1, max_objects: int = 4,
                object_size: tuple[float, float] = (0.15, 0.45)) -> DetectionSet:
    """`count` images of `size`x`size` with `min_objects`..`max_objects` objects each, whose sides are
    fractions of the image side drawn from `object_size`; class masks come along (0 background)."""
    _check_options(count, size, min_objects, max_objects, object_size)
    rng = np.random.default_rng(seed)
    grid = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (2, H, W): y, x in [0, 1)
    images, masks, boxes, labels = [], [], [], []
    for _ in range(count):
        image, mask, b, lab = _one_image(rng, size, grid, int(rng.integers(min_objects, max_objects + 1)),
                                         object_size)
        images.append(image)
        masks.append(mask)
        boxes.append(b)
        labels.append(lab)
    return DetectionSet(np.stack(images), boxes, labels, list(CLASSES), [(size, size)] * count, np.stack(masks))


def shapes_segmentation(**options: object) -> SegmentationSet:
    """The same images as `make_shapes(**options)`, as a segmentation set (background, circle, square, triangle)."""
    return as_segmentation(make_shapes(**options))  # type: ignore[arg-type]


def _check_options(count: int, size: int, min_objects: int, max_objects: int,
                   object_size: tuple[float, float]) -> None:
    lo, hi = object_size
    problems = [(count >= 1, "count", count, "at least 1"), (size >= 16, "size", size, "at least 16"),
                (0 <= min_objects <= max_objects, "min_objects", min_objects, "between 0 and max_objects"),
                (0 < lo <= hi <= 0.9, "object_size", object_size, "[low, high] with 0 < low <= high <= 0.9")]
    for ok, name, value, rule in problems:
        if not ok:
            raise DataError(f"builtin:shapes: data.builtin.{name} = {value!r} must be {rule}")


def _one_image(rng: np.random.Generator, size: int, grid: np.ndarray, n: int, object_size: tuple[float, float]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    background, colours = _background(rng, size, grid)
    instances = np.zeros((size, size), np.int32)  # 0 background, i + 1 for the i-th placed object
    placed: list[np.ndarray] = []  # boxes as drawn, before later objects cover a corner
    classes: list[int] = []
    for _ in range(n):
        cls = int(rng.integers(len(CLASSES)))
        found = _place(rng, size, cls, object_size, placed)
        if found is None:  # no room left for this object
            continue
        shape, (x0, y0), box = found
        instances[y0:y0 + shape.shape[0], x0:x0 + shape.shape[1]][shape] = len(placed) + 1
        placed.append(box)
        classes.append(cls)
    boxes, keep = _visible_boxes(instances, placed)
    lut = np.array([0, *(c + 1 for c in classes)], np.uint8)
    palette = np.stack([_object_colour(rng, colours) for _ in classes]) if classes else np.zeros((0, 3))
    image = background
    covered = instances > 0
    image[covered] = palette[instances[covered] - 1]
    image += rng.normal(0.0, rng.uniform(2.0, 12.0), image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, lut[instances], boxes, np.array(classes, np.int64)[keep]


def _background(rng: np.random.Generator, size: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float32: a blend of two random colours by noise, a gradient, stripes or checks; and the two."""
    colours = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    y, x = grid
    angle = rng.uniform(0, 2 * math.pi)
    along = x * math.cos(angle) + y * math.sin(angle)
    kind = int(rng.integers(4))
    if kind == 0:  # gradient
        t = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif kind == 1:  # stripes
        t = ((along * size / rng.uniform(4, 16)) % 1.0 < 0.5).astype(np.float32)
    elif kind == 2:  # checks
        cell = rng.uniform(4, 20) / size
        t = ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(np.float32)
    else:  # smooth noise: a coarse random grid, upsampled
        coarse = Image.fromarray(rng.integers(0, 256, (int(rng.integers(3, 9)),) * 2, dtype=np.uint8))
        t = np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0
    return colours[0] + t[..., None] * (colours[1] - colours[0]), colours


def _object_colour(rng: np.random.Generator, colours: np.ndarray) -> np.ndarray:
    """A random colour far from every blend of the background's two colours (or the farthest of a few tries)."""
    a, b = colours
    tries = rng.uniform(0, 255, (16, 3)).astype(np.float32)
    t = np.clip(((tries - a) @ (b - a)) / max(float((b - a) @ (b - a)), 1e-6), 0.0, 1.0)
    distance = np.linalg.norm(tries - (a + t[:, None] * (b - a)), axis=1)
    good = np.flatnonzero(distance >= MIN_CONTRAST)
    return tries[good[0]] if len(good) else tries[int(distance.argmax())]


def _place(rng: np.random.Generator, size: int, cls: int, object_size: tuple[float, float],
           placed: list[np.ndarray]) -> tuple[np.ndarray, tuple[int, int], np.ndarray] | None:
    """A drawn shape (bool array), its top-left corner and its box, overlapping no placed box much."""
    existing = np.array(placed, np.float32).reshape(-1, 4)
    for _ in range(PLACEMENT_TRIES):
        side = max(3, round(rng.uniform(*object_size) * size))
        shape = _draw(rng, cls, side)
        x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
        ys, xs = np.nonzero(shape)
        box = np.array([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1], np.float32)
        if _max_overlap(box, existing) <= MAX_OVERLAP:
            return shape, (x0, y0), box
    return None


def _draw(rng: np.random.Generator, cls: int, side: int) -> np.ndarray:
    """(side, side) bool: a circle, or a square or triangle turned by a small random angle."""
    canvas = Image.new("L", (side, side))
    draw = ImageDraw.Draw(canvas)
    if CLASSES[cls] == "circle":
        draw.ellipse([0, 0, side - 1, side - 1], fill=1)
    else:
        corners = 4 if CLASSES[cls] == "square" else 3
        turn = rng.uniform(-0.3, 0.3) + (math.pi / 4 if corners == 4 else -math.pi / 2)
        angles = turn + 2 * math.pi * np.arange(corners) / corners
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        points = (points - points.min(0)) * ((side - 1) / np.ptp(points, axis=0).max())
        draw.polygon([tuple(p) for p in points], fill=1)
    return np.asarray(canvas) > 0


def _max_overlap(box: np.ndarray, others: np.ndarray) -> float:
    """Largest intersection with any of `others`, as a fraction of the smaller box's area."""
    if not len(others):
        return 0.0
    wh = np.clip(np.minimum(box[2:], others[:, 2:]) - np.maximum(box[:2], others[:, :2]), 0, None)
    areas = np.prod(others[:, 2:] - others[:, :2], axis=1)
    smaller = np.minimum(areas, np.prod(box[2:] - box[:2]))
    return float((wh.prod(axis=1) / smaller).max())


def _visible_boxes(instances: np.ndarray, placed: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Tight boxes of what is left of each object once later ones are drawn (n, 4), and which objects show."""
    boxes, keep = [], []
    for i, (x1, y1, x2, y2) in enumerate(np.array(placed, np.int64).reshape(-1, 4)):
        ys, xs = np.nonzero(instances[y1:y2, x1:x2] == i + 1)
        if len(xs):
            boxes.append([x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1])
            keep.append(i)
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(keep, np.int64)
