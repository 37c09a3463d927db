"""Boxes and masks: COCO, YOLO, VOC and CSV agree; bad boxes, images and masks are named or skipped and counted;
`builtin:shapes` is deterministic with tight boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dlforge.data.detection import DetectionSet, read_detection_set, read_mask, read_segmentation_set
from dlforge.data.shapes import make_shapes, shapes_segmentation
from dlforge.errors import DataError

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def truth() -> DetectionSet:
    """Five shapes images, the last without objects, with fractional box coordinates."""
    data = make_shapes(count=5, size=64, seed=1, max_objects=3)
    data.boxes = [np.clip(b + np.float32(0.25), 0, 63.5) for b in data.boxes[:4]] + [np.zeros((0, 4), np.float32)]
    data.labels = [*data.labels[:4], np.zeros(0, np.int64)]
    assert set(np.concatenate(data.labels).tolist()) == {0, 1, 2}  # every class appears, so sorted names agree
    return data


def _save_images(data: DetectionSet, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{i}.png" for i in range(len(data))]
    for path, image in zip(paths, data.images, strict=True):
        Image.fromarray(image).save(path)
    return paths


def _objects(data: DetectionSet, i: int) -> list[tuple[list[float], str]]:
    return [(box.tolist(), CLASSES[k]) for box, k in zip(data.boxes[i], data.labels[i], strict=True)]


def write_coco(data: DetectionSet, root: Path) -> Path:
    """annotations.json beside an images/ folder (file_name relative to that folder)."""
    paths = _save_images(data, root / "images")
    doc: dict = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": c}
                                                                  for k, c in enumerate(CLASSES)]}
    for i, path in enumerate(paths):
        doc["images"].append({"id": i, "file_name": path.name, "width": 64, "height": 64})
        for (x1, y1, x2, y2), name in _objects(data, i):
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i, "iscrowd": 0,
                                       "category_id": CLASSES.index(name) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1]})
    (root / "annotations.json").write_text(json.dumps(doc))
    return root / "annotations.json"


def write_yolo(data: DetectionSet, root: Path) -> Path:
    """images/{train,val}/ and labels/{train,val}/ with a data.yaml naming both splits; no label file for the
    image without objects."""
    for i in range(len(data)):
        split = "train" if i < 3 else "val"
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        path = root / "images" / split / f"img{i}.png"
        Image.fromarray(data.images[i]).save(path)
        lines = [f"{CLASSES.index(n)} {(x1 + x2) / 128} {(y1 + y2) / 128} {(x2 - x1) / 64} {(y2 - y1) / 64}"
                 for (x1, y1, x2, y2), n in _objects(data, i)]
        if lines:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{path.stem}.txt").write_text("\n".join(lines) + "\n")
    doc = {"path": ".", "train": "images/train", "val": "images/val", "names": dict(enumerate(CLASSES))}
    (root / "data.yaml").write_text(yaml.safe_dump(doc))
    return root


def write_voc(data: DetectionSet, root: Path) -> Path:
    paths = _save_images(data, root / "JPEGImages")
    (root / "Annotations").mkdir()
    for i, path in enumerate(paths):
        objects = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
                          f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                          for (x1, y1, x2, y2), n in _objects(data, i))
        (root / "Annotations" / f"{path.stem}.xml").write_text(
            f"<annotation><filename>{path.name}</filename><size><width>64</width><height>64</height>"
            f"<depth>3</depth></size>{objects}</annotation>")
    return root


def write_csv(data: DetectionSet, root: Path) -> Path:
    paths = _save_images(data, root / "images")
    lines = ["image_path,xmin,ymin,xmax,ymax,label"]
    for i, path in enumerate(paths):
        rows = [f"images/{path.name},{x1},{y1},{x2},{y2},{n}" for (x1, y1, x2, y2), n in _objects(data, i)]
        lines += rows or [f"images/{path.name},,,,,"]
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    return root / "boxes.csv"


@pytest.mark.parametrize("writer", [write_coco, write_yolo, write_voc, write_csv])
def test_every_format_loads_the_same_boxes(truth: DetectionSet, tmp_path: Path, writer) -> None:
    data = read_detection_set(str(writer(truth, tmp_path)))
    assert data.classes == CLASSES and len(data) == len(truth) and not data.skipped
    by_name = {Path(p).stem: i for i, p in enumerate(data.images)}
    for i in range(len(truth)):
        j = by_name[f"img{i}"]
        assert data.sizes[j] == (64, 64)
        assert data.boxes[j].dtype == np.float32 and data.boxes[j].shape == truth.boxes[i].shape
        np.testing.assert_allclose(data.boxes[j], truth.boxes[i], atol=1e-4)
        assert data.labels[j].tolist() == truth.labels[i].tolist()


def test_classes_argument_fixes_label_order(truth: DetectionSet, tmp_path: Path) -> None:
    order = ["triangle", "circle", "square"]
    data = read_detection_set(str(write_csv(truth, tmp_path)), classes=order)
    assert data.classes == order
    assert data.labels[0].tolist() == [order.index(CLASSES[k]) for k in truth.labels[0]]


def _csv(tmp_path: Path, rows: list[str], size: int = 32) -> Path:
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((size, size, 3), 160, np.uint8)).save(tmp_path / "b.png")
    path = tmp_path / "boxes.csv"
    path.write_text("\n".join(["image_path,xmin,ymin,xmax,ymax,label", *rows]) + "\n")
    return path


BAD_ROWS = [
    ("b.png,20,4,40,30,cat", r"boxes\.csv:3: box \[20, 4, 40, 30\] lies outside the 32x32 image"),
    ("b.png,5,6,5,20,cat", r"boxes\.csv:3: box \[5, 6, 5, 20\] has zero or negative width"),
    ("b.png,1,1,9,9,zebra", r"boxes\.csv:3: label 'zebra' is not one of the classes \['cat', 'dog'\]"),
    ("b.png,1,x,9,9,cat", r"boxes\.csv:3: xmin, ymin, xmax and ymax must be numbers"),
    ("b.png,nan,1,9,9,cat", r"boxes\.csv:3: box \[nan, 1, 9, 9\] has a non-finite coordinate"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_bad_box_is_named_with_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = _csv(tmp_path, ["a.png,1,2,10,12,cat", row, "a.png,3,3,30,31,dog"])
    with pytest.raises(DataError, match=message + r".*\(set data\.on_error: skip to skip such boxes\)"):
        read_detection_set(str(path), classes=["cat", "dog"])
    data = read_detection_set(str(path), classes=["cat", "dog"], on_error="skip")
    assert [w for w, _ in data.skipped] == [f"{path}:3"]
    assert [len(b) for b in data.boxes] == [2, 0]  # b.png stays, without its bad box
    np.testing.assert_array_equal(data.boxes[0], [[1, 2, 10, 12], [3, 3, 30, 31]])
    assert data.labels[0].tolist() == [0, 1]


def test_box_within_a_pixel_of_the_edge_is_clipped(tmp_path: Path) -> None:
    data = read_detection_set(str(_csv(tmp_path, ["a.png,-0.5,2,32.9,33,cat"])))
    np.testing.assert_array_equal(data.boxes[0], [[0, 2, 32, 32]])
    assert data.sizes == [(32, 32)] and data.classes == ["cat"]
    with pytest.raises(DataError, match=r"boxes\.csv:2: box \[0, 2, 33\.5, 30\] lies outside the 32x32 image by more"):
        read_detection_set(str(_csv(tmp_path, ["a.png,0,2,33.5,30,cat"])))


def test_corrupt_and_missing_images_are_named_or_skipped(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["a.png,1,2,10,12,cat", "broken.png,1,1,5,5,cat", "gone.png,1,1,5,5,dog"])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    with pytest.raises(DataError, match=r"boxes\.csv:3: .*broken\.png: cannot read image.*skip such files"):
        read_detection_set(str(path))
    data = read_detection_set(str(path), on_error="skip")
    assert [Path(p).name for p in data.images] == ["a.png"]
    assert [(Path(w.split(": ")[-1]).name, why) for w, why in data.skipped] == [
        ("broken.png", data.skipped[0][1]), ("gone.png", "no such file")]
    assert data.classes == ["cat", "dog"]  # named by the rows, whether or not their images survive


def test_coco_errors_crowds_and_missing_files(truth: DetectionSet, tmp_path: Path) -> None:
    path = write_coco(truth, tmp_path)
    good = path.read_text()
    doc = json.loads(good)
    doc["annotations"][0]["iscrowd"] = 1
    doc["annotations"][1]["bbox"] = [60, 60, 20, 20]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"annotations\.json: annotation 2: box \[60, 60, 80, 80\] lies outside"):
        read_detection_set(str(path))
    data = read_detection_set(str(path), on_error="skip")
    assert [why.split(" ")[0] for _, why in data.skipped] == ["iscrowd", "box"]
    assert sum(map(len, data.boxes)) == sum(map(len, truth.boxes)) - 2
    path.write_text(good)
    (tmp_path / "images" / "img3.png").unlink()
    with pytest.raises(DataError, match=r"image 3: .*'img3\.png' not found; looked in .*images"):
        read_detection_set(str(path))


def test_yolo_and_voc_errors_name_their_files(truth: DetectionSet, tmp_path: Path) -> None:
    root = write_yolo(truth, tmp_path / "yolo")
    label = root / "labels" / "train" / "img0.txt"
    label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\n")
    bad_line = len(label.read_text().splitlines())
    with pytest.raises(DataError, match=rf"img0\.txt:{bad_line}: class id 7 is not among the data\.yaml names"):
        read_detection_set(str(root / "data.yaml"))
    voc = write_voc(truth, tmp_path / "voc")
    xml = voc / "Annotations" / "img1.xml"
    xml.write_text(xml.read_text().replace("</annotation>", "<object><name>circle</name><bndbox><xmin>9</xmin>"
                                           "<ymin>9</ymin><xmax>9</xmax><ymax>20</ymax></bndbox></object>"
                                           "</annotation>"))
    n = len(truth.boxes[1]) + 1
    with pytest.raises(DataError, match=rf"img1\.xml: object {n}: box \[9, 9, 9, 20\] has zero"):
        read_detection_set(str(voc), format="voc")


def test_unknown_layout_lists_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot tell the format; expected a COCO \.json.*YOLO data\.yaml.*VOC"):
        read_detection_set(str(tmp_path))


# ------------------------------------------------------------------ builtin:shapes


def test_shapes_are_deterministic() -> None:
    a, b, c = make_shapes(count=8, size=64, seed=3), make_shapes(count=8, size=64, seed=3), make_shapes(8, 64, 4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes, strict=True))
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (8, 64, 64, 3) and a.images.dtype == np.uint8 and a.masks.shape == (8, 64, 64)


def test_shape_boxes_are_tight_around_their_mask_pixels() -> None:
    data = make_shapes(count=300, size=96, seed=0)
    counts = np.bincount(np.concatenate(data.labels), minlength=3)
    assert counts.sum() >= 300 and counts.min() > 0.8 * counts.mean()
    for mask, boxes, labels in zip(data.masks, data.boxes, data.labels, strict=True):
        covered = np.zeros(mask.shape, bool)
        for (x1, y1, x2, y2), k in zip(boxes.astype(int), labels, strict=True):
            inside = mask[y1:y2, x1:x2] == k + 1  # each box edge touches a pixel of its class: tight
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y1:y2, x1:x2] |= inside
        assert np.array_equal(covered, mask > 0)  # and the boxes hold every object pixel


def test_large_shapes_have_the_requested_object_counts() -> None:
    data = make_shapes(count=4, size=512, seed=0, min_objects=20, max_objects=40, object_size=(0.03, 0.07))
    counts = [len(b) for b in data.boxes]
    assert all(20 <= n <= 40 for n in counts) and len(set(counts)) > 1
    sides = np.concatenate([np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) for b in data.boxes])
    assert sides.max() <= 0.07 * 512 + 1 and sides.min() >= 0.03 * 512 * 0.5


def test_builtin_sources_and_their_options() -> None:
    data = read_detection_set("builtin:shapes", builtin_options={"count": 3, "size": 48})
    assert len(data) == 3 and data.sizes == [(48, 48)] * 3 and data.classes == CLASSES
    seg = read_segmentation_set("builtin:shapes", builtin_options={"count": 3, "size": 48})
    assert seg.classes == ["background", *CLASSES] and np.array_equal(seg.masks, data.masks)
    with pytest.raises(DataError, match=r"builtin:shapes: bad data\.builtin options.*colour"):
        read_detection_set("builtin:shapes", builtin_options={"colour": "red"})
    with pytest.raises(DataError, match=r"data\.builtin\.object_size"):
        make_shapes(count=1, object_size=(0.5, 0.2))


# ------------------------------------------------------------------ segmentation


def _mask_folder(tmp_path: Path, n: int = 3) -> tuple[Path, np.ndarray]:
    seg = shapes_segmentation(count=n, size=40, seed=5)
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(n):
        Image.fromarray(seg.images[i]).save(tmp_path / "images" / f"s{i}.jpg")
        mask = Image.fromarray(seg.masks[i]).convert("P")
        mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
        mask.save(tmp_path / "masks" / f"s{i}.png")
    (tmp_path / "classes.txt").write_text("\n".join(seg.classes) + "\n")
    return tmp_path, seg.masks


def test_index_png_folder_round_trips(tmp_path: Path) -> None:
    root, masks = _mask_folder(tmp_path)
    seg = read_segmentation_set(str(root))
    assert seg.classes == ["background", *CLASSES] and len(seg) == 3 and seg.ignore_index == 255
    assert [Path(p).name for p in seg.images] == ["s0.jpg", "s1.jpg", "s2.jpg"]
    for path, expected in zip(seg.masks, masks, strict=True):
        assert np.array_equal(read_mask(path), expected)


def test_bad_masks_are_named(tmp_path: Path) -> None:
    root, masks = _mask_folder(tmp_path)
    bad = masks[1].copy()
    bad[7, 9] = 4
    Image.fromarray(bad).save(root / "masks" / "s1.png")
    with pytest.raises(DataError, match=r"s1\.png: value 4 at row 7, column 9 is not a class index 0-3"):
        read_segmentation_set(str(root))
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "masks" / "s2.png")
    (root / "images" / "lonely.jpg").write_bytes((root / "images" / "s0.jpg").read_bytes())
    seg = read_segmentation_set(str(root), on_error="skip")
    assert [Path(p).name for p in seg.images] == ["s0.jpg"]
    reasons = {Path(where).name: why for where, why in seg.skipped}
    assert sorted(reasons) == ["lonely.jpg", "s1.png", "s2.png"]
    assert reasons["lonely.jpg"].startswith("no mask for it") and reasons["s1.png"].startswith("value 4")
    assert "mode RGB" in reasons["s2.png"] and "index-colour" in reasons["s2.png"]
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"no class names: give data\.classes or write .*classes\.txt"):
        read_segmentation_set(str(root))


def test_coco_polygons_are_rasterised(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "a.png")
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}],
           "categories": [{"id": 3, "name": "tile"}, {"id": 1, "name": "spot"}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 100.0,
                "segmentation": [[10, 4, 20, 4, 20, 14, 10, 14]], "bbox": [10, 4, 10, 10]},
               {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 999.0,  # wrong, and not used
                "segmentation": [[12, 6, 14, 6, 14, 8, 12, 8]], "bbox": [12, 6, 2, 2]},
               {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 9.0,
                "segmentation": {"size": [24, 32], "counts": [72, 3, 21, 3, 21, 3, 645]}, "bbox": [3, 0, 3, 3]}]}
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    seg = read_segmentation_set(str(tmp_path / "coco.json"))
    assert seg.classes == ["background", "spot", "tile"] and seg.masks.shape == (1, 24, 32)
    expected = np.zeros((24, 32), np.uint8)
    expected[4:14, 10:20] = 2  # the square tile, pixels 10..19 by 4..13
    expected[6:8, 12:14] = 1  # the small spot painted over it (smaller by its pixels)
    expected[0:3, 3:6] = 255  # the crowd region (column-major RLE): ignored
    assert np.array_equal(seg.masks[0], expected)
    doc["annotations"][0]["segmentation"] = [[1, 2, 3]]
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"coco\.json: annotation 1: segmentation is neither polygons"):
        read_segmentation_set(str(tmp_path / "coco.json"))
