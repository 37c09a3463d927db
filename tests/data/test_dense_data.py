"""Boxes and masks follow the pixels through augmentation, resizing, mosaic and tiling; tiles merge back.

Scenes are solid rectangles of known colours on black, label k drawn in COLOURS[k]; a box is right
when it is the bounding box of its colour's pixels in the output image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from scipy import ndimage
from torchvision.ops import box_iou

from dlforge.data.augment import DenseAugmentSpec, mosaic
from dlforge.data.dense_datasets import DetectionDataset, SegmentationDataset
from dlforge.data.detection import DetectionSet, SegmentationSet
from dlforge.data.tiling import crop_boxes, merge_detections, sliced_predict, tile_windows

# Every colour has a 255 channel, so no blend of a colour with black looks like another colour.
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
           (255, 128, 0), (128, 255, 0), (0, 128, 255), (255, 0, 128), (128, 0, 255), (0, 255, 128)]
TOL = 2.0  # px: resampling blurs an edge by about a pixel


def scene(rng: np.random.Generator, labels: list[int], height: int, width: int,
          side: tuple[int, int] = (8, 24)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 with one rectangle per label, >= 4 px apart; boxes (n, 4) xyxy, labels (n,)."""
    image = np.zeros((height, width, 3), np.uint8)
    boxes: list[list[int]] = []
    while len(boxes) < len(labels):
        w, h = rng.integers(*side, size=2)
        x, y = rng.integers(0, width - w), rng.integers(0, height - h)
        if all(x + w + 4 <= b[0] or b[2] + 4 <= x or y + h + 4 <= b[1] or b[3] + 4 <= y for b in boxes):
            image[y:y + h, x:x + w] = COLOURS[labels[len(boxes)]]
            boxes.append([x, y, x + w, y + h])
    return image, np.array(boxes, np.float32), np.array(labels, np.int64)


def colour_pixels(image: torch.Tensor, label: int) -> np.ndarray:
    """(H, W) bool: where the uint8 (3, H, W) image has the colour of `label`."""
    colour = torch.tensor(COLOURS[label]).view(3, 1, 1)
    return ((image.int() - colour).abs().amax(0) <= 24).numpy()


def bbox(pixels: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(pixels)
    return None if len(xs) == 0 else np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round().to(torch.uint8)


def assert_boxes_on_pixels(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                           complete: bool = True) -> None:
    """Each box is its colour's extent; `complete`: each clearly visible colour (a blob >= 4 px wide) has a box."""
    assert boxes.shape == (len(labels), 4) and len(set(labels.tolist())) == len(labels)
    for box, label in zip(boxes.numpy(), labels.tolist(), strict=True):
        pixels = colour_pixels(image, label)
        (x0, y0), (x1, y1) = np.floor(box[:2] - TOL).clip(0).astype(int), np.ceil(box[2:] + TOL).astype(int)
        near = np.zeros_like(pixels)
        near[y0:y1, x0:x1] = pixels[y0:y1, x0:x1]
        found = bbox(near)
        assert found is not None, f"label {label}: no pixels of its colour in its box {box}"
        np.testing.assert_allclose(found, box, atol=TOL, err_msg=f"label {label}")
        # Elsewhere only 1-2 px resampling seams may take this colour: an opening removes them.
        solid = ndimage.binary_opening(pixels, np.ones((3, 3)))
        assert not (solid & ~near).any(), f"label {label}: its colour lies outside its box {box}"
    for label in set(range(len(COLOURS))) - set(labels.tolist()) if complete else ():
        solid = ndimage.binary_opening(colour_pixels(image, label), np.ones((4, 4)))
        assert not solid.any(), f"label {label} is visible but has no box"


def detection_target(boxes: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)}


@pytest.mark.parametrize("spec", [{"hflip": True}, {"vflip": True}, {"scale": (0.5, 1.5)},
                                  {"hflip": True, "vflip": True, "scale": (0.6, 1.4)}])
def test_geometric_augmentation_moves_boxes_with_pixels(spec: dict) -> None:
    transform = DenseAugmentSpec(**spec).transform()
    rng = np.random.default_rng(0)
    changed = 0
    for seed in range(25):
        image, boxes, labels = scene(rng, rng.choice(len(COLOURS), 4, replace=False).tolist(), 72, 72)
        source = torch.tensor(image).permute(2, 0, 1)
        torch.manual_seed(seed)
        out, target = transform(source, detection_target(boxes, labels))
        assert out.shape == (3, 72, 72) and out.dtype == torch.uint8
        assert_boxes_on_pixels(out, target["boxes"], target["labels"])
        changed += not torch.equal(out, source)
    assert changed >= 5  # the transform did act


def test_full_pipeline_keeps_boxes_and_masks_on_pixels_under_colour_jitter() -> None:
    """Colour jitter changes every colour, so objects are told apart by an instance mask that rides
    along: boxes must match the mask, and the mask the pixels (uniform colour inside each object,
    background colour where the mask is background or exposed)."""
    transform = DenseAugmentSpec(hflip=True, vflip=True, scale=(0.5, 1.5), color_jitter=0.4).transform()
    rng, erode = np.random.default_rng(1), np.ones((3, 3))
    exposed = 0
    for seed in range(40):
        image, boxes, labels = scene(rng, [0, 1, 2, 3], 64, 64)
        ids = np.zeros((64, 64), np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            ids[y0:y1, x0:x1] = k + 1
        torch.manual_seed(seed)
        out, target = transform(torch.tensor(image).permute(2, 0, 1),
                                {**detection_target(boxes, labels), "masks": torch.tensor(ids)})
        mask, pixels = target["masks"].numpy(), out.permute(1, 2, 0).numpy().astype(int)
        for box, label in zip(target["boxes"].numpy(), target["labels"].tolist(), strict=True):
            np.testing.assert_allclose(bbox(mask == label + 1), box, atol=TOL)
        background = ndimage.binary_erosion((mask == 0) | (mask == 255), erode)
        bg_colour = pixels[background].mean(0)
        assert np.ptp(pixels[background], axis=0).max() <= 2
        for k in range(1, 5):
            inside = ndimage.binary_erosion(mask == k, erode)
            if inside.any():
                assert np.ptp(pixels[inside], axis=0).max() <= 2
                assert np.abs(pixels[inside].mean(0) - bg_colour).max() > 20
            if ndimage.binary_erosion(mask == k, np.ones((4, 4))).any():
                assert k - 1 in target["labels"].tolist(), "a visible object lost its box"
        exposed += (mask == 255).any()
    assert exposed >= 5  # zoom-outs exposed area, filled as ignore


@pytest.mark.parametrize(("shapes", "tol"), [([(64, 64)] * 4, 0.0),  # no resize: an exact paste
                                             ([(64, 64), (48, 80), (96, 64), (40, 40)], TOL)])
def test_mosaic_combines_four_samples_with_boxes_and_masks_on_pixels(shapes: list, tol: float) -> None:
    rng = np.random.default_rng(2)
    for seed in range(30):
        samples, areas = [], {}
        for q, (h, w) in enumerate(shapes):
            image, boxes, labels = scene(rng, [3 * q, 3 * q + 1, 3 * q + 2], h, w, side=(6, 14))
            masks = np.zeros((h, w), np.uint8)
            for b, k in zip(boxes.astype(int), labels, strict=True):
                masks[b[1]:b[3], b[0]:b[2]] = k + 1
                areas[int(k)] = (b[2] - b[0]) * (b[3] - b[1]) * (64 / w) * (64 / h)  # after the resize to 64
            samples.append((torch.tensor(image).permute(2, 0, 1),
                            {**detection_target(boxes, labels), "masks": torch.tensor(masks)}))
        image, target = mosaic(samples, 64, torch.Generator().manual_seed(seed))
        assert image.shape == (3, 64, 64) and target["masks"].shape == (64, 64)
        assert_visible_quarter_kept(image, target, areas, tol)
        for label in range(12):  # the class mask lies on its colour
            on_colour = colour_pixels(image, label)
            if tol == 0:
                assert np.array_equal(target["masks"].numpy() == label + 1, on_colour)
            else:
                assert (target["masks"].numpy()[ndimage.binary_erosion(on_colour)] == label + 1).all()


def assert_visible_quarter_kept(image: torch.Tensor, target: dict, areas: dict[int, float], tol: float) -> None:
    """Boxes lie on their pixels; an object keeps its box iff >= 25% of it is in view (by the class mask;
    fuzzy near 25%, as resizing rounds areas)."""
    boxes, labels = target["boxes"], target["labels"]
    for box, label in zip(boxes.numpy(), labels.tolist(), strict=True):
        found = bbox(colour_pixels(image, label))
        assert found is not None
        np.testing.assert_allclose(found, box, atol=tol)
    for label, area in areas.items():
        in_view = target["masks"].numpy() == label + 1
        visible = in_view.sum() / area
        if visible > 0.35 and min(np.ptp(np.nonzero(in_view), axis=1)) >= 3:
            assert label in labels.tolist(), f"label {label}: {visible:.0%} visible but dropped"
        if visible < 0.15:
            assert label not in labels.tolist(), f"label {label}: {visible:.0%} visible but kept"


def detection_set(rng: np.random.Generator, n: int, height: int, width: int, per_image: int) -> DetectionSet:
    scenes = [scene(rng, list(range(per_image * i, per_image * (i + 1))), height, width) for i in range(n)]
    return DetectionSet(np.stack([s[0] for s in scenes]), [s[1] for s in scenes], [s[2] for s in scenes],
                        [f"c{k}" for k in range(len(COLOURS))], [(height, width)] * n)


def test_detection_dataset_resizes_non_square_images_and_scales_boxes(tmp_path) -> None:
    data = detection_set(np.random.default_rng(3), 2, 60, 120, 3)
    Image.fromarray(data.images[1]).save(tmp_path / "b.png")
    data.images = [data.images[0], tmp_path / "b.png"]  # an in-memory image and a file
    dataset = DetectionDataset(data, 64)
    for i in range(2):
        image, target = dataset[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
        expected = torch.tensor(data.boxes[i]) * torch.tensor([64 / 120, 64 / 60] * 2)
        torch.testing.assert_close(target["boxes"], expected)
        assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == data.labels[i].tolist()
        assert_boxes_on_pixels(to_uint8(image), target["boxes"], target["labels"])
    images, targets = DetectionDataset.collate([dataset[0], dataset[1]])
    assert images.shape == (2, 3, 64, 64) and [len(t["boxes"]) for t in targets] == [3, 3]


def test_detection_dataset_mosaic_is_reproducible_and_keeps_boxes_on_pixels() -> None:
    data = detection_set(np.random.default_rng(4), 4, 80, 64, 3)
    dataset = DetectionDataset(data, 64, DenseAugmentSpec(hflip=True, scale=(0.8, 1.2), mosaic=1.0))
    mixed = 0
    for seed in range(12):
        torch.manual_seed(seed)
        image, target = dataset[seed % 4]
        torch.manual_seed(seed)
        again, _ = dataset[seed % 4]
        assert torch.equal(image, again)
        # Incomplete: mosaic drops objects with < 25% in view, however visible (see the mosaic test).
        assert_boxes_on_pixels(to_uint8(image), target["boxes"], target["labels"], complete=False)
        mixed += len({k // 3 for k in target["labels"].tolist()}) > 1  # objects from several images
    assert mixed >= 6


def test_segmentation_dataset_masks_stay_on_pixels(tmp_path) -> None:
    rng = np.random.default_rng(5)
    images, masks = [], []
    for _ in range(3):
        image, boxes, labels = scene(rng, [0, 1, 2], 50, 90)
        mask = np.zeros((50, 90), np.uint8)
        for b, k in zip(boxes.astype(int), labels, strict=True):
            mask[b[1]:b[3], b[0]:b[2]] = k + 1
        images.append(image)
        masks.append(mask)
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    data = SegmentationSet([tmp_path / "a.png", *images[1:]], np.stack(masks), ["background", "a", "b", "c"])
    dataset = SegmentationDataset(data, 64, DenseAugmentSpec(hflip=True, vflip=True, scale=(0.5, 1.5)))
    exposed = 0
    for seed in range(30):
        torch.manual_seed(seed)
        image, mask = dataset[seed % 3]
        assert image.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.int64
        image, mask = to_uint8(image), mask.numpy()
        for k in range(3):  # mask == k + 1 exactly where colour k is, up to the resampled border
            colour = colour_pixels(image, k)
            assert (mask[ndimage.binary_erosion(colour)] == k + 1).all()
            assert colour[ndimage.binary_erosion(mask == k + 1, iterations=2)].all()
        black = (image.int().amax(0) <= 8).numpy()
        assert black[ndimage.binary_erosion(mask == 255, iterations=2)].all()  # exposed area: black image, ignored mask
        exposed += (mask == 255).any()
    assert exposed >= 5


def test_tile_windows_cover_the_image_with_the_asked_overlap() -> None:
    for height, width, tile, overlap in [(250, 330, 100, 0.25), (175, 175, 100, 0.25), (640, 500, 128, 0.2)]:
        windows = tile_windows(height, width, tile, overlap)
        covered = np.zeros((height, width), bool)
        for x0, y0, x1, y1 in windows:
            assert (x1 - x0, y1 - y0) == (tile, tile) and x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height
            covered[y0:y1, x0:x1] = True
        assert covered.all()
        xs = sorted({w[0] for w in windows})
        step = np.diff(xs)
        assert (step[:-1] == tile - round(overlap * tile)).all() and step[-1] <= tile - round(overlap * tile)
    assert tile_windows(50, 70, 100, 0.2) == [(0, 0, 70, 50)]


def test_crop_boxes_keeps_by_visibility_in_window_coordinates() -> None:
    boxes = torch.tensor([[120.0, 120, 140, 140],  # inside
                          [90, 150, 115, 160],  # 60% inside (x 100..115 of 90..115)
                          [90, 150, 105, 160],  # 33% inside
                          [300, 300, 310, 310]])  # outside
    kept, labels = crop_boxes(boxes, torch.tensor([0, 1, 2, 3]), (100, 100, 200, 200))
    assert labels.tolist() == [0, 1]
    torch.testing.assert_close(kept, torch.tensor([[20.0, 20, 40, 40], [0, 50, 15, 60]]))
    assert crop_boxes(boxes, torch.tensor([0, 1, 2, 3]), (100, 100, 200, 200), min_visibility=0.3)[1].tolist() \
        == [0, 1, 2]


def test_merge_detections_joins_a_cut_object_and_nothing_else() -> None:
    whole, partial = [100.0, 100, 120, 120], [110.0, 100, 120, 120]  # the partial one is cut at x = 110
    boxes, scores, labels = merge_detections(torch.tensor([whole, partial]), torch.tensor([0.7, 0.9]),
                                             torch.tensor([0, 0]))
    torch.testing.assert_close(boxes, torch.tensor([whole]))
    assert scores.tolist() == pytest.approx([0.9]) and labels.tolist() == [0]
    neighbours = torch.tensor([whole, [123.0, 100, 143, 120]])
    assert len(merge_detections(neighbours, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]))[0]) == 2
    overlapping = torch.tensor([whole, [101.0, 100, 121, 120]])
    assert len(merge_detections(overlapping, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]))[0]) == 2
    assert len(merge_detections(overlapping, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]))[0]) == 1
    empty = merge_detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert [tuple(t.shape) for t in empty] == [(0, 4), (0,), (0,)]


def component_detector(tiles: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """A detector for the test scenes: each solid component of a tile (T, 3, S, S) is an object, cut
    where the tile cuts it; class = its brightest channel (0 red, 1 green); smaller boxes (the cut
    ones) score higher, so merging must recover full boxes from partial ones."""
    out = []
    for tile in tiles:
        components, _ = ndimage.label((tile.amax(0) > 0.5).numpy())
        boxes, labels = [], []
        for k, (ys, xs) in enumerate(ndimage.find_objects(components), start=1):
            boxes.append([xs.start, ys.start, xs.stop, ys.stop])
            labels.append(int(tile[:, torch.from_numpy(components == k)].mean(1).argmax()))
        boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
        out.append({"boxes": boxes, "scores": 1 - area / tile[0].numel(), "labels": torch.tensor(labels).long()})
    return out


def test_sliced_predict_finds_each_object_once_with_its_full_box() -> None:
    height, width, tile, overlap = 300, 260, 100, 0.25  # windows start at x 0, 75, 150, 160; y 0, 75, 150, 200
    objects = [((10, 10, 30, 28), 0), ((90, 20, 112, 40), 1), ((60, 90, 80, 110), 0), ((200, 10, 222, 30), 1),
               ((92, 92, 112, 112), 1), ((116, 92, 136, 112), 1),  # one class, 4 px apart, over a corner
               ((140, 170, 160, 186), 0), ((163, 170, 180, 186), 1),  # two classes, 3 px apart
               ((170, 95, 190, 115), 0), ((230, 250, 250, 270), 0), ((5, 280, 25, 298), 0)]
    image = np.zeros((height, width, 3), np.uint8)
    for (x0, y0, x1, y1), label in objects:
        image[y0:y1, x0:x1] = COLOURS[label]
    boxes, labels = torch.tensor([b for b, _ in objects], dtype=torch.float32), [k for _, k in objects]
    windows = tile_windows(height, width, tile, overlap)
    edges = {w[0] for w in windows} | {w[2] for w in windows}, {w[1] for w in windows} | {w[3] for w in windows}
    cut = [any(b[0] < x < b[2] for x in edges[0]) or any(b[1] < y < b[3] for y in edges[1]) for b, _ in objects]
    assert sum(cut) >= 7  # most objects straddle a tile border

    tensor = torch.tensor(image).permute(2, 0, 1).float() / 255
    result = sliced_predict(tensor, component_detector, tile, overlap, image_size=128, batch_size=5)
    assert len(result["boxes"]) == len(objects)
    iou = box_iou(boxes, result["boxes"])  # (objects, found)
    best = iou.argmax(1)
    assert sorted(best.tolist()) == list(range(len(objects)))  # one found box per object
    assert (iou.amax(1) > 0.9).all(), iou.amax(1)
    assert result["labels"][best].tolist() == labels


def test_detection_dataset_tiles_cut_boxes_and_subsample_empty_tiles() -> None:
    rng = np.random.default_rng(7)
    image, boxes, labels = scene(rng, [0, 1, 2], 120, 120)
    big = np.zeros((400, 330, 3), np.uint8)
    big[:120, :120] = image  # objects in one corner, most tiles empty
    data = DetectionSet(big[None], [boxes], [labels], ["a", "b", "c"], [(400, 330)])
    evaluation = DetectionDataset(data, 100, tiling=(100, 0.25))
    assert len(evaluation) == len(tile_windows(400, 330, 100, 0.25)) == 25  # x 0, 75, 150, 225, 230
    full = 0
    for i in range(len(evaluation)):
        tile_image, target = evaluation[i]
        assert tile_image.shape == (3, 100, 100)
        assert_tile_boxes(to_uint8(tile_image), target, torch.tensor(boxes), evaluation.items[i][1])
        full += len(target["labels"]) > 0
    training = DetectionDataset(data, 100, DenseAugmentSpec(), seed=1, tiling=(100, 0.25))
    assert len(training) == 2 * full
    assert sum(len(training[i][1]["labels"]) > 0 for i in range(len(training))) == full


def assert_tile_boxes(image: torch.Tensor, target: dict, boxes: torch.Tensor, window: tuple) -> None:
    """In a tile: the objects with >= 50% of their area inside have boxes, on their pixels."""
    x0, y0, x1, y1 = window
    inside = (boxes[:, 2:].clamp(max=torch.tensor([x1, y1])) - boxes[:, :2].clamp(min=torch.tensor([x0, y0])))
    visible = inside.clamp(min=0).prod(1) / (boxes[:, 2:] - boxes[:, :2]).prod(1)
    assert target["labels"].tolist() == torch.nonzero(visible >= 0.5).flatten().tolist()
    for box, label in zip(target["boxes"].numpy(), target["labels"].tolist(), strict=True):
        np.testing.assert_allclose(bbox(colour_pixels(image, label)), box, atol=0.01)


def test_dense_augment_spec_rejects_bad_values() -> None:
    with pytest.raises(ValidationError, match="scale"):
        DenseAugmentSpec(scale=(1.5, 0.5))
    with pytest.raises(ValidationError):
        DenseAugmentSpec(mosaic=1.5)
    with pytest.raises(ValidationError):
        DenseAugmentSpec(rotate=10)
    assert DenseAugmentSpec().transform() is None
