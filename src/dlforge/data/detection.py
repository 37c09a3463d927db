"""Boxes and masks: detection and segmentation sets read from COCO JSON, YOLO txt, Pascal VOC XML,
CSV, image/mask folders, or `builtin:shapes`.

Every detection source becomes a `DetectionSet`, every segmentation source a `SegmentationSet`:
images (file paths or one uint8 array), and per image its boxes and labels or its class mask.
Boxes are float32 `[x1, y1, x2, y2]` in the image's own pixels; labels index `classes`.
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from dlforge._progress import progress
from dlforge.data.images import IMAGE_SUFFIXES
from dlforge.errors import DataError
from dlforge.registry import DATASETS

log = logging.getLogger("dlforge")


@dataclass
class DetectionSet:
    images: list[Path] | np.ndarray  # file paths, or (N, H, W, 3) uint8
    boxes: list[np.ndarray]  # per image: (n, 4) float32 xyxy, absolute pixels
    labels: list[np.ndarray]  # per image: (n,) int64, indexes into classes
    classes: list[str]  # no background class
    sizes: list[tuple[int, int]]  # (H, W) per image
    masks: np.ndarray | None = None  # (N, H, W) uint8 class masks (0 background, k + 1 = classes[k]), if known
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why): dropped images or boxes

    def __len__(self) -> int:
        return len(self.boxes)

    def subset(self, index: np.ndarray) -> DetectionSet:
        images = self.images[index] if isinstance(self.images, np.ndarray) else [self.images[i] for i in index]
        return DetectionSet(images, [self.boxes[i] for i in index], [self.labels[i] for i in index], self.classes,
                            [self.sizes[i] for i in index], None if self.masks is None else self.masks[index])


@dataclass
class SegmentationSet:
    images: list[Path] | np.ndarray  # file paths, or (N, H, W, 3) uint8
    masks: list[Path] | np.ndarray  # index-colour PNG paths, or (N, H, W) uint8 class indexes
    classes: list[str]  # classes[0] is usually "background"
    ignore_index: int = 255  # mask value that no loss or metric counts
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.masks)

    def subset(self, index: np.ndarray) -> SegmentationSet:
        def pick(x: list | np.ndarray) -> list | np.ndarray:
            return x[index] if isinstance(x, np.ndarray) else [x[i] for i in index]

        return SegmentationSet(pick(self.images), pick(self.masks), self.classes, self.ignore_index)


def as_segmentation(data: DetectionSet) -> SegmentationSet:
    """The class masks of an in-memory detection set as a segmentation set, with "background" first."""
    if data.masks is None:
        raise DataError("this detection set has no masks, so it cannot serve segmentation")
    return SegmentationSet(data.images, data.masks, ["background", *data.classes], skipped=list(data.skipped))


# ------------------------------------------------------------------ detection readers

FORMATS = ("a COCO .json file, a YOLO data.yaml (or a folder holding one), a Pascal VOC folder "
           "(Annotations/*.xml, JPEGImages/), or a .csv of image_path,xmin,ymin,xmax,ymax,label")
CSV_COLUMNS = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")
EDGE_SLACK = 1.0  # pixels a box may exceed the image by before it counts as outside (then it is clipped)


@dataclass
class _Box:
    coords: tuple[float, ...]  # x1, y1, x2, y2: pixels, or fractions of the image side (YOLO)
    label: str
    where: str  # "file:line", "file: annotation 7", "file: object 2"
    problem: str | None = None  # found while parsing: reported (or skipped) like a bad box


@dataclass
class _Entry:
    image: Path
    where: str  # what names the image in messages (the annotation file, CSV line or image itself)
    boxes: list[_Box] = field(default_factory=list)
    problem: str | None = None  # e.g. image not found: reported (or skipped) like a corrupt image
    normalised: bool = False  # coordinates are fractions of the image's width and height


@dataclass
class _Parsed:
    entries: list[_Entry]
    classes: list[str]  # the source's own class list (default label order)
    loose: list[tuple[str, str]] = field(default_factory=list)  # bad boxes not tied to a known image
    notes: list[tuple[str, str]] = field(default_factory=list)  # dropped on purpose (COCO crowd regions)


def read_detection_set(source: str, *, format: str = "auto", classes: Sequence[str] | None = None,
                       on_error: str = "error", builtin_options: dict | None = None) -> DetectionSet:
    """Read `builtin:<name>`, COCO JSON, YOLO txt, Pascal VOC XML or a CSV of boxes into a DetectionSet.

    Every image is opened once here, so a missing or corrupt file stops the run before training
    (or is skipped with on_error="skip"). Every box is checked: one exceeding the image by at most
    1 pixel is clipped; one further outside, empty (zero or negative width or height), non-finite,
    or with a label outside `classes` is an error naming file and line (or skipped and counted).
    Coordinates are taken as written in every format, VOC included (no 1-pixel shift), so the same
    boxes in any format load as the same numbers. `classes` fixes the label order (a trained
    model's labels); by default COCO's categories by id, YOLO's names, or the sorted VOC/CSV labels.
    """
    if source.startswith("builtin:"):
        data = _builtin(source, builtin_options)
        if not isinstance(data, DetectionSet):
            raise DataError(f"{source}: not a detection dataset (it has no boxes)")
        return data
    path = _existing(source)
    fmt = _detect_format(path) if format == "auto" else format
    readers = {"coco": _read_coco, "yolo": _read_yolo, "voc": _read_voc, "csv": _read_csv}
    if fmt not in readers:
        raise DataError(f"{source}: unknown data.format {fmt!r}; expected auto, {', '.join(readers)}")
    parsed = readers[fmt](path)
    return _assemble(parsed, list(classes) if classes is not None else parsed.classes, on_error, source)


def _builtin(source: str, options: dict | None) -> object:
    factory = DATASETS.get(source.removeprefix("builtin:"))
    try:
        inspect.signature(factory).bind(**(options or {}))
    except TypeError as e:
        raise DataError(f"{source}: bad data.builtin options: {e}") from None
    return factory(**(options or {}))


def _existing(source: str) -> Path:
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: no such file or folder (data.source)")
    return path


def _detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if path.is_file() and suffix in {".json", ".csv"}:
        return "coco" if suffix == ".json" else "csv"
    if (path.is_file() and suffix in {".yaml", ".yml"}) or (path / "data.yaml").is_file():
        return "yolo"
    if (path / "Annotations").is_dir():
        return "voc"
    raise DataError(f"{path}: cannot tell the format; expected {FORMATS}")


def _assemble(parsed: _Parsed, classes: list[str], on_error: str, source: str) -> DetectionSet:
    """Open every image, check and convert every box, and count (or raise) what is wrong."""
    skipped = list(parsed.notes)
    for where, why in parsed.loose:
        _fail(where, why, on_error, skipped, "boxes")
    lookup = {c: k for k, c in enumerate(classes)}
    images, boxes, labels, sizes = [], [], [], []
    for entry in progress(parsed.entries, len(parsed.entries), "checking images"):
        size = _image_size(entry, on_error, skipped)
        if size is None:
            continue
        good = [b for b in (_checked_box(box, size, entry.normalised, lookup, on_error, skipped)
                            for box in entry.boxes) if b is not None]
        images.append(entry.image)
        sizes.append(size)
        boxes.append(np.array([b for b, _ in good], np.float32).reshape(-1, 4))
        labels.append(np.array([k for _, k in good], np.int64))
    if skipped:
        log.warning("%s: skipped %d image(s) or box(es), e.g. %s: %s", source, len(skipped), *skipped[0])
    if not images:
        raise DataError(f"{source}: no usable images" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return DetectionSet(images, boxes, labels, classes, sizes, skipped=skipped)


def _fail(where: str, why: str, on_error: str, skipped: list[tuple[str, str]], kind: str) -> None:
    """Raise the problem, or record it when skipping."""
    if on_error == "error":
        raise DataError(f"{where}: {why} (set data.on_error: skip to skip such {kind})")
    skipped.append((where, why))


def _image_size(entry: _Entry, on_error: str, skipped: list[tuple[str, str]]) -> tuple[int, int] | None:
    """(H, W) of the entry's image, fully decoded once; None when it is skipped."""
    at = entry.where if entry.where == str(entry.image) else f"{entry.where}: {entry.image}"
    if entry.problem is None:
        try:
            with Image.open(entry.image) as im:
                im.load()
                return im.size[1], im.size[0]
        except (OSError, UnidentifiedImageError, ValueError) as e:
            entry.problem = "no such file" if isinstance(e, FileNotFoundError) else f"cannot read image: {e}"
    _fail(at, entry.problem, on_error, skipped, "files")
    return None


def _checked_box(box: _Box, size: tuple[int, int], normalised: bool, lookup: dict[str, int], on_error: str,
                 skipped: list[tuple[str, str]]) -> tuple[np.ndarray, int] | None:
    """The box in pixels, clipped to the image, and its label index; None when it is skipped."""
    height, width = size
    limit = np.array([width, height, width, height], np.float64)
    why = box.problem
    if why is None:
        xyxy = np.array(box.coords, np.float64) * (limit if normalised else 1.0)
        clipped = np.minimum(np.maximum(xyxy, 0.0), limit)
        why = _box_rule(xyxy, clipped, limit, box.label, lookup)
        if why is None:
            return clipped.astype(np.float32), lookup[box.label]
    _fail(box.where, why, on_error, skipped, "boxes")
    return None


def _box_rule(xyxy: np.ndarray, clipped: np.ndarray, limit: np.ndarray, label: str,
              lookup: dict[str, int]) -> str | None:
    """Which rule the box breaks, if any."""
    shown = "[" + ", ".join(f"{v:g}" for v in xyxy) + "]"
    w, h = clipped[2] - clipped[0], clipped[3] - clipped[1]
    if not np.isfinite(xyxy).all():
        return f"box {shown} has a non-finite coordinate"
    if label not in lookup:
        return f"label {label!r} is not one of the classes {list(lookup)}"
    if (xyxy < -EDGE_SLACK).any() or (xyxy > limit + EDGE_SLACK).any():
        return f"box {shown} lies outside the {limit[0]:g}x{limit[1]:g} image by more than {EDGE_SLACK:g} pixel"
    if w <= 0 or h <= 0:
        return f"box {shown} has zero or negative width or height ({w:g} x {h:g} inside the image)"
    return None


# ------------------------------------------------------------------ COCO


def _read_coco(path: Path) -> _Parsed:
    """Every image listed in the JSON, with or without annotations; crowd annotations are dropped and noted."""
    doc = _coco_document(path)
    names = _coco_categories(path, doc)
    entries = _coco_images(path, doc)
    parsed = _Parsed(list(entries.values()), list(names.values()))
    for i, ann in enumerate(doc["annotations"]):
        where = f"{path}: annotation {ann.get('id', f'#{i}')}"
        if ann.get("iscrowd"):
            parsed.notes.append((where, "iscrowd annotation (a crowd region, not one object)"))
            continue
        entry = entries.get(ann.get("image_id"))
        if entry is None:
            parsed.loose.append((where, f"image_id {ann.get('image_id')!r} is not among the images"))
            continue
        box = _Box((), names.get(ann.get("category_id"), ""), where)
        bbox = ann.get("bbox")
        if ann.get("category_id") not in names:
            box.problem = f"category_id {ann.get('category_id')!r} is not among the categories"
        elif not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            box.problem = f"bbox {bbox!r} is not [x, y, width, height]"
        else:
            x, y, w, h = (float(v) for v in bbox)
            box.coords = (x, y, x + w, y + h)
        entry.boxes.append(box)
    return parsed


def _coco_document(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read COCO JSON: {e}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
            raise DataError(f"{path}: not COCO JSON: expected a list under {key!r}")
    return doc


def _coco_categories(path: Path, doc: dict) -> dict[int, str]:
    """Category id -> name, ordered by id."""
    try:
        return {c["id"]: str(c["name"]) for c in sorted(doc["categories"], key=lambda c: c["id"])}
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: every category needs an 'id' and a 'name' ({e!r})") from None


def _coco_images(path: Path, doc: dict) -> dict[object, _Entry]:
    """Image id -> entry, each file found beside the JSON, in images/ beside it, or in images/ one level up."""
    entries = {}
    for i, image in enumerate(doc["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DataError(f"{path}: images[{i}] needs an 'id' and a 'file_name'")
        name = Path(str(image["file_name"]))
        folders = [path.parent, path.parent / "images", path.parent.parent / "images"]
        places = [name] if name.is_absolute() else list(dict.fromkeys(folder / name for folder in folders))
        found = next((p for p in places if p.is_file()), None)
        entry = _Entry(found or places[0], f"{path}: image {image['id']}")
        if found is None:
            entry.problem = f"image {str(name)!r} not found; looked in {', '.join(str(p.parent) for p in places)}"
        entries[image["id"]] = entry
    return entries


# ------------------------------------------------------------------ YOLO


def _read_yolo(path: Path) -> _Parsed:
    """The images the data.yaml's train, val and test entries name (deduplicated, in that order); with none of
    those entries, every image under images/. Labels sit at the same path with the last images/ folder
    replaced by labels/ and a .txt suffix; an image without a label file has no objects."""
    yaml_path = path / "data.yaml" if path.is_dir() else path
    try:
        doc = yaml.safe_load(yaml_path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{yaml_path}: cannot read YOLO data.yaml: {e}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{yaml_path}: expected a mapping with names, path, train, val")
    names = _yolo_names(yaml_path, doc.get("names"))
    entries = []
    for image in _yolo_images(yaml_path, doc):
        entry = _Entry(image, str(image), normalised=True)
        _yolo_labels(entry, _label_file(image), names)
        entries.append(entry)
    return _Parsed(entries, list(names.values()))


def _yolo_names(yaml_path: Path, names: object) -> dict[int, str]:
    """Class id -> name, ordered by id, from a list or an {id: name} mapping."""
    if isinstance(names, list) and names:
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict) and names and all(isinstance(k, int) for k in names):
        return {k: str(names[k]) for k in sorted(names)}
    raise DataError(f"{yaml_path}: 'names' must be a non-empty list of class names or a mapping of class id to name")


def _yolo_images(yaml_path: Path, doc: dict) -> list[Path]:
    """`path` is the dataset root (relative to the yaml's folder; the yaml's folder when absent or missing)."""
    base = yaml_path.parent
    root = base / str(doc["path"]) if doc.get("path") else base
    root = root if root.is_dir() else base
    keys = [k for k in ("train", "val", "test") if doc.get(k)]
    if not keys:
        return _images_under(root / "images", f"{yaml_path}: no train/val/test entries and no images in")
    found: list[Path] = []
    for key in keys:
        items = doc[key] if isinstance(doc[key], list) else [doc[key]]
        for item in items:
            found += _yolo_entry(yaml_path, key, root / str(item))
    return list(dict.fromkeys(found))


def _yolo_entry(yaml_path: Path, key: str, target: Path) -> list[Path]:
    """A folder (every image under it), a .txt list of image paths (relative to the list), or one image."""
    if target.is_dir():
        return _images_under(target, f"{yaml_path}: {key}: no images in")
    if target.suffix.lower() == ".txt" and target.is_file():
        lines = [line.strip() for line in target.read_text().splitlines() if line.strip()]
        return [target.parent / line for line in lines]
    if target.suffix.lower() in IMAGE_SUFFIXES:
        return [target]
    raise DataError(f"{yaml_path}: {key}: {target} is not a folder of images, a .txt list or an image")


def _images_under(folder: Path, message: str) -> list[Path]:
    images = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()) \
        if folder.is_dir() else []
    if not images:
        raise DataError(f"{message} {folder}")
    return images


def _label_file(image: Path) -> Path:
    parts = list(image.parts)
    if "images" in parts[:-1]:
        at = len(parts) - 2 - parts[-2::-1].index("images")
        parts[at] = "labels"
    return Path(*parts).with_suffix(".txt")


def _yolo_labels(entry: _Entry, label_file: Path, names: dict[int, str]) -> None:
    """Add the label file's boxes (lines `class cx cy w h`, fractions of the image) to the entry."""
    if not label_file.is_file():
        return
    try:
        lines = label_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        entry.problem = f"cannot read label file {label_file}: {e}"
        return
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        box = _Box((), "", f"{label_file}:{n}")
        try:
            cls, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:])
            box.coords = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            box.label = names.get(cls, "")
            if cls not in names:
                box.problem = f"class id {cls} is not among the data.yaml names (ids {min(names)}-{max(names)})"
        except ValueError:
            box.problem = f"{line.strip()!r} is not 'class cx cy w h' (an integer and four numbers)"
        entry.boxes.append(box)


# ------------------------------------------------------------------ Pascal VOC


def _read_voc(path: Path) -> _Parsed:
    """Every Annotations/*.xml (sorted); its image is JPEGImages/<filename>, else JPEGImages/<xml stem>.<any>."""
    xmls = sorted((path / "Annotations").glob("*.xml"))
    if not xmls:
        raise DataError(f"{path}: no .xml files in {path / 'Annotations'}")
    entries = [_voc_entry(xml, path / "JPEGImages") for xml in xmls]
    seen = {b.label for e in entries for b in e.boxes if b.problem is None}
    return _Parsed(entries, sorted(seen))


def _voc_entry(xml: Path, image_dir: Path) -> _Entry:
    try:
        root = ElementTree.parse(xml).getroot()
    except (OSError, ElementTree.ParseError) as e:
        return _Entry(image_dir / xml.stem, str(xml), problem=f"cannot parse annotation XML: {e}")
    places = [image_dir / name] if (name := (root.findtext("filename") or "").strip()) else []
    places += [image_dir / (xml.stem + s) for s in sorted(IMAGE_SUFFIXES)]
    found = next((p for p in places if p.is_file()), None)
    entry = _Entry(found or places[0], str(xml))
    if found is None:
        entry.problem = f"no image for it in {image_dir} (looked for {places[0].name} and {xml.stem}.*)"
    for i, obj in enumerate(root.findall("object"), 1):
        box = _Box((), (obj.findtext("name") or "").strip(), f"{xml}: object {i}")
        try:
            box.coords = tuple(float(obj.findtext(f"bndbox/{k}") or "") for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            box.problem = "bndbox needs numbers in xmin, ymin, xmax and ymax"
        if not box.label:
            box.problem = "object has no name"
        entry.boxes.append(box)
    return entry


# ------------------------------------------------------------------ CSV


def _read_csv(path: Path) -> _Parsed:
    """The images the rows name (relative to the CSV), in order of first mention; a row whose box fields and
    label are all empty declares an image with no objects. Line numbers count the header as line 1."""
    entries: dict[Path, _Entry] = {}
    loose = []
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: no column(s) {', '.join(missing)}; the header must name "
                                f"{','.join(CSV_COLUMNS)}")
            for row in reader:
                values = {c: (row.get(c) or "").strip() for c in CSV_COLUMNS}
                where = f"{path}:{reader.line_num}"
                if not values["image_path"]:
                    loose.append((where, "empty image_path"))
                    continue
                image = path.parent / values["image_path"]
                entry = entries.setdefault(image, _Entry(image, where))
                if any(values[c] for c in CSV_COLUMNS[1:]):
                    entry.boxes.append(_csv_box(values, where))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read CSV: {e}") from None
    seen = {b.label for e in entries.values() for b in e.boxes if b.problem is None}
    return _Parsed(list(entries.values()), sorted(seen), loose)


def _csv_box(values: dict[str, str], where: str) -> _Box:
    box = _Box((), values["label"], where)
    empty = [c for c in CSV_COLUMNS[1:] if not values[c]]
    if empty:
        box.problem = f"empty {', '.join(empty)} (leave all of xmin..label empty for an image with no objects)"
        return box
    try:
        box.coords = tuple(float(values[c]) for c in CSV_COLUMNS[1:5])
    except ValueError:
        box.problem = "xmin, ymin, xmax and ymax must be numbers"
    return box


# ------------------------------------------------------------------ segmentation readers

SEGMENTATION_FORMATS = "a folder with images/ and masks/ (index-colour PNGs), or a COCO .json with segmentations"
MASK_MODES = {"P", "L", "1", "I", "I;16"}  # modes whose pixel values are numbers, not colours
IGNORE = 255


def read_segmentation_set(source: str, *, classes: Sequence[str] | None = None, on_error: str = "error",
                          builtin_options: dict | None = None) -> SegmentationSet:
    """Read `builtin:<name>`, an images/ + masks/ folder, or COCO polygons/RLE into a SegmentationSet.

    Every mask is checked here (mode, size, values), so a bad one stops the run before training
    (or is skipped with on_error="skip"). Folder masks stay paths (read later with `read_mask`);
    COCO masks are rasterised now: one (N, H, W) uint8 array when every image has the same size,
    else a list of (H, W) arrays, one byte per pixel in memory either way.
    """
    if source.startswith("builtin:"):
        data = _builtin(source, builtin_options)
        if isinstance(data, DetectionSet):
            data = as_segmentation(data)
        if not isinstance(data, SegmentationSet):
            raise DataError(f"{source}: not a segmentation dataset (it has no masks)")
        return data
    path = _existing(source)
    if path.is_dir():
        return _read_mask_folder(path, classes, on_error)
    if path.suffix.lower() == ".json":
        return _read_coco_masks(path, classes, on_error)
    raise DataError(f"{source}: expected {SEGMENTATION_FORMATS}")


def read_mask(path: str | Path) -> np.ndarray:
    """(H, W) uint8 class indexes of an index-colour mask (PIL mode P or L: pixel values are classes)."""
    try:
        with Image.open(path) as im:
            if im.mode not in MASK_MODES:
                raise DataError(f"{path}: a mode {im.mode} image: masks must be index-colour PNGs (mode P or L) "
                                "whose pixel values are class indexes, not colours; map each colour to its "
                                "class index first")
            mask = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: cannot read mask: {e}") from None
    if mask.dtype != np.uint8 and mask.size and (mask.min() < 0 or mask.max() > IGNORE):
        raise DataError(f"{path}: mask values {mask.min()}..{mask.max()} do not fit class indexes 0-255")
    return mask.astype(np.uint8)


def _read_mask_folder(root: Path, classes: Sequence[str] | None, on_error: str) -> SegmentationSet:
    """Every image under images/, with the mask of the same relative path and stem under masks/."""
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise DataError(f"{root}: no {sub}/ folder; expected {SEGMENTATION_FORMATS}")
    names = _folder_classes(root, classes)
    images, masks, skipped = [], [], []
    files = _images_under(root / "images", f"{root}: no images in")
    for image in progress(files, len(files), "checking masks"):
        mask = _find_mask(root, image)
        problem = (image, f"no mask for it in {mask.parent} (expected {mask.name})") if not mask.is_file() \
            else _mask_problem(image, mask, len(names))
        if problem is None:
            images.append(image)
            masks.append(mask)
        else:
            _fail(str(problem[0]), problem[1], on_error, skipped, "files")
    return _segmentation_set(root, images, masks, names, skipped)


def _folder_classes(root: Path, classes: Sequence[str] | None) -> list[str]:
    if classes is None and not (root / "classes.txt").is_file():
        raise DataError(f"{root}: no class names: give data.classes or write {root / 'classes.txt'} "
                        "(one name per line, the name of mask value 0 first)")
    names = list(classes) if classes is not None else \
        [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    if not 1 <= len(names) < IGNORE:
        raise DataError(f"{root}: {len(names)} classes; masks hold 1 to {IGNORE - 1} (value {IGNORE} is ignore)")
    return names


def _find_mask(root: Path, image: Path) -> Path:
    """masks/<same relative folder>/<stem>.png, or the same stem with another image suffix if that exists."""
    folder = root / "masks" / image.parent.relative_to(root / "images")
    places = [folder / (image.stem + s) for s in (".png", *sorted(IMAGE_SUFFIXES - {".png"}))]
    return next((p for p in places if p.is_file()), places[0])


def _mask_problem(image: Path, mask: Path, k: int) -> tuple[Path, str] | None:
    """The file at fault and why, if the image is unreadable or the mask does not fit it."""
    try:
        with Image.open(image) as im:
            im.load()
            width, height = im.size
    except (OSError, UnidentifiedImageError, ValueError) as e:
        return image, f"cannot read image: {e}"
    try:
        values = read_mask(mask)
    except DataError as e:
        return mask, str(e).removeprefix(f"{mask}: ")
    if values.shape != (height, width):
        return mask, f"mask is {values.shape[1]}x{values.shape[0]} but its image {image.name} is {width}x{height}"
    bad = _bad_value(values, k)
    return None if bad is None else (mask, bad)


def _bad_value(mask: np.ndarray, k: int) -> str | None:
    bad = (mask >= k) & (mask != IGNORE)
    if not bad.any():
        return None
    row, col = (int(v[0]) for v in np.nonzero(bad))
    return (f"value {mask[row, col]} at row {row}, column {col} is not a class index 0-{k - 1} "
            f"or {IGNORE} (ignore)")


def _segmentation_set(source: Path, images: list[Path], masks: list | np.ndarray, classes: list[str],
                      skipped: list[tuple[str, str]]) -> SegmentationSet:
    if skipped:
        log.warning("%s: skipped %d image(s) or annotation(s), e.g. %s: %s", source, len(skipped), *skipped[0])
    if not images:
        raise DataError(f"{source}: no usable images" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return SegmentationSet(images, masks, classes, IGNORE, skipped)


# ------------------------------------------------------------------ COCO segmentations


def _read_coco_masks(path: Path, classes: Sequence[str] | None, on_error: str) -> SegmentationSet:
    """Each image's annotations painted into one class mask: crowd regions as ignore first, then objects from
    the largest to the smallest (so small objects on top of large ones stay visible); the rest is 0."""
    doc = _coco_document(path)
    categories = _coco_categories(path, doc)
    names = list(classes) if classes is not None else ["background", *categories.values()]
    lookup = {c: k for k, c in enumerate(names)}
    entries = _coco_images(path, doc)
    by_image: dict[object, list[tuple[int, dict]]] = {key: [] for key in entries}
    skipped: list[tuple[str, str]] = []
    for i, ann in enumerate(doc["annotations"]):
        if ann.get("image_id") in by_image:
            by_image[ann["image_id"]].append((i, ann))
        else:
            _fail(f"{path}: annotation {ann.get('id', f'#{i}')}", f"image_id {ann.get('image_id')!r} is not "
                  "among the images", on_error, skipped, "annotations")
    images, masks = [], []
    for key, entry in progress(entries.items(), len(entries), "rasterising masks"):
        size = _image_size(entry, on_error, skipped)
        if size is not None:
            images.append(entry.image)
            masks.append(_paint(path, size, by_image[key], categories, lookup, on_error, skipped))
    same = len({m.shape for m in masks}) == 1
    return _segmentation_set(path, images, np.stack(masks) if same else masks, names, skipped)


def _paint(path: Path, size: tuple[int, int], annotations: list[tuple[int, dict]], categories: dict[int, str],
           lookup: dict[str, int], on_error: str, skipped: list[tuple[str, str]]) -> np.ndarray:
    """One image's class mask; the painting order comes from the rasterised regions, not the JSON's `area`."""
    layers = []  # (crowd, pixel count, region, value)
    for i, ann in annotations:
        where = f"{path}: annotation {ann.get('id', f'#{i}')}"
        name, crowd = categories.get(ann.get("category_id")), bool(ann.get("iscrowd"))
        region, why = _rasterise(ann.get("segmentation"), size)
        if name is None:
            why = f"category_id {ann.get('category_id')!r} is not among the categories"
        elif name not in lookup and not crowd:
            why = f"label {name!r} is not one of the classes {list(lookup)}"
        if why is not None:
            _fail(where, why, on_error, skipped, "annotations")
            continue
        layers.append((crowd, int(region.sum()), region, IGNORE if crowd else lookup[name]))
    mask = np.zeros(size, np.uint8)
    for _, _, region, value in sorted(layers, key=lambda layer: (not layer[0], -layer[1])):
        mask[region] = value
    return mask


def _rasterise(segmentation: object, size: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """(H, W) bool of polygons ([[x, y, x, y, ...], ...]) or RLE ({size, counts}), or what is wrong."""
    from pycocotools import mask as coco_mask

    height, width = size
    polygons = isinstance(segmentation, list) and segmentation and all(
        isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation)
    if not polygons and not (isinstance(segmentation, dict) and "counts" in segmentation):
        return None, "segmentation is neither polygons ([[x1, y1, x2, y2, x3, y3, ...], ...]) nor RLE"
    if not polygons and list(segmentation.get("size", [])) != [height, width]:
        return None, f"RLE size {segmentation.get('size')!r} is not the image's [{height}, {width}]"
    try:
        if polygons:
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        else:  # uncompressed RLE has a list of counts; compressed RLE goes to decode as it is
            rle = coco_mask.frPyObjects(segmentation, height, width) \
                if isinstance(segmentation["counts"], list) else segmentation
        return coco_mask.decode(rle).astype(bool), None
    except (TypeError, ValueError, KeyError) as e:
        return None, f"cannot decode segmentation: {e!r}"
