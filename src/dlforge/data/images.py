"""Labelled image collections: a folder per class, a CSV/Parquet of `path,label`, or a built-in set.

Every source becomes an `ImageSet`: the images (file paths, or one uint8 array for in-memory
sets), integer targets and the class names. File images are checked once when the set is
built, so a corrupt file is reported by name before training starts, never mid-epoch.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from dlforge._progress import progress
from dlforge.errors import DataError
from dlforge.registry import DATASETS

if TYPE_CHECKING:
    import pandas as pd
    from torchvision.transforms import v2

log = logging.getLogger("dlforge")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}


@dataclass
class ImageSet:
    images: list[Path] | np.ndarray  # file paths, or (N, H, W, C) uint8
    targets: np.ndarray  # (N,) int64
    classes: list[str]
    channels: int  # 1 (all grayscale) or 3
    native_size: tuple[int, int] | None = None  # (H, W) when every image has it
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    columns: pd.DataFrame | None = None  # a table's other columns, one row per image (groups for an audit)

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: np.ndarray) -> ImageSet:
        images = self.images[index] if isinstance(self.images, np.ndarray) else [self.images[i] for i in index]
        columns = None if self.columns is None else self.columns.iloc[index].reset_index(drop=True)
        return ImageSet(images, self.targets[index], self.classes, self.channels, self.native_size, columns=columns)


def read_image_set(source: str, *, path_column: str = "path", label_column: str = "label",
                   on_error: str = "error", classes: Sequence[str] | None = None) -> ImageSet:
    """Read `builtin:<name>`, a folder of class folders, or a .csv/.parquet table of path,label.

    `classes` fixes the label order (a trained model's labels); unknown labels are then errors.
    """
    if source.startswith("builtin:"):
        return DATASETS.get(source.removeprefix("builtin:"))()
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: no such file or folder (data.source)")
    columns = None
    if path.is_dir():
        files, labels, where = _scan_folder(path)
    elif path.suffix.lower() in {".csv", ".parquet", ".pq"}:
        files, labels, where, columns = _read_table(path, path_column, label_column)
    else:
        raise DataError(f"{source}: expected a folder of class folders, a .csv or a .parquet file")
    return _checked(files, labels, where, on_error, classes, columns)


def _scan_folder(root: Path) -> tuple[list[Path], list[str], list[str]]:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class folders found (expected {root}/<label>/<image>)")
    files, labels = [], []
    for d in class_dirs:
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                files.append(f)
                labels.append(d.name)
    return files, labels, [str(f) for f in files]


def _read_table(path: Path, path_column: str, label_column: str
                ) -> tuple[list[Path], list[str], list[str], pd.DataFrame]:
    import pandas as pd

    try:
        table = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as e:  # pandas raises many types for a bad file
        raise DataError(f"{path}: cannot read table: {e}") from None
    for column, field_name in ((path_column, "data.path_column"), (label_column, "data.label_column")):
        if column not in table.columns:
            raise DataError(f"{path}: no column {column!r} ({field_name}); columns: {', '.join(table.columns)}")
    # CSV line numbers: header is line 1, so row i is on line i + 2; Parquet rows are named by index.
    row_name = (lambda i: f"{path}:{i + 2}") if path.suffix.lower() == ".csv" else (lambda i: f"{path} row {i}")
    files, labels, where = [], [], []
    for i, (p, label) in enumerate(zip(table[path_column], table[label_column], strict=True)):
        if pd.isna(p) or pd.isna(label):
            raise DataError(f"{row_name(i)}: empty {path_column!r} or {label_column!r}")
        f = Path(str(p))
        files.append(f if f.is_absolute() else path.parent / f)
        labels.append(str(label))
        where.append(row_name(i))
    others = table.drop(columns=[path_column, label_column]).astype(object)
    return files, labels, where, others.where(others.notna(), None)


def _checked(files: list[Path], labels: list[str], where: list[str], on_error: str,
             classes: Sequence[str] | None, columns: pd.DataFrame | None = None) -> ImageSet:
    """Open every image once: record mode and size, and report or skip unreadable ones."""
    if not files:
        raise DataError(f"{where[0] if where else 'data.source'}: no images found")
    keep, skipped, gray, sizes = [], [], True, set()
    for i, f in progress(enumerate(files), len(files), "checking images"):
        try:
            with Image.open(f) as im:
                im.load()
                gray &= im.mode in GRAY_MODES
                sizes.add(im.size[::-1])
            keep.append(i)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            reason = "no such file" if isinstance(e, FileNotFoundError) else f"cannot read image: {e}"
            if on_error == "error":
                at = f"{where[i]}: {f}" if where[i] != str(f) else str(f)
                raise DataError(f"{at}: {reason} (set data.on_error: skip to skip such files)") from None
            skipped.append((str(f), reason))
    if skipped:
        log.warning("skipped %d unreadable image(s) of %d, e.g. %s", len(skipped), len(files), skipped[0][0])
    if not keep:
        raise DataError(f"{where[0]}: none of the {len(files)} images could be read")
    kept_labels = [labels[i] for i in keep]
    known = list(classes) if classes is not None else sorted(set(kept_labels))
    lookup = {c: k for k, c in enumerate(known)}
    unknown = sorted(set(kept_labels) - set(lookup))
    if unknown:
        raise DataError(f"{where[keep[kept_labels.index(unknown[0])]]}: label {unknown[0]!r} is not one of "
                        f"the model's labels {known}")
    targets = np.array([lookup[c] for c in kept_labels], dtype=np.int64)
    native = sizes.pop() if len(sizes) == 1 else None
    kept_columns = None if columns is None else columns.iloc[keep].reset_index(drop=True)
    return ImageSet([files[i] for i in keep], targets, known, 1 if gray else 3, native, skipped, kept_columns)


@DATASETS.register("digits")
def digits() -> ImageSet:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), as uint8."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    return ImageSet(images, bunch.target.astype(np.int64), [str(c) for c in bunch.target_names], 1, (8, 8))


# ------------------------------------------------------------------ tensors


def to_uint8_tensor(item: Any, channels: int) -> torch.Tensor:
    """A path, the bytes of an image file, a PIL image or an array (HxW, HxWxC; uint8, or float in [0, 1])
    -> (C, H, W) uint8."""
    if isinstance(item, str | Path | bytes):
        try:
            with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as im:
                item = im.convert("L" if channels == 1 else "RGB")
        except (OSError, UnidentifiedImageError) as e:
            name = "image bytes" if isinstance(item, bytes) else item
            raise DataError(f"{name}: cannot read image: {e}") from None
    if isinstance(item, Image.Image):
        item = np.asarray(item.convert("L" if channels == 1 else "RGB"))
    array = np.asarray(item)
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"image array of dtype {array.dtype}: expected uint8 or float in [0, 1]")
        array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise DataError(f"image array of shape {array.shape}: expected (H, W) or (H, W, 1|3|4)")
    tensor = torch.tensor(array[..., :3]).permute(2, 0, 1)  # (C, H, W), a copy: arrays may be read-only
    if tensor.shape[0] != channels:
        tensor = tensor.float().mean(0, keepdim=True).round().to(torch.uint8) if channels == 1 \
            else tensor.expand(3, -1, -1)
    return tensor


def resize_square(image: torch.Tensor, side: int) -> torch.Tensor:
    """(C, H, W) -> (C, side, side), antialiased: dense tasks' plain (not letterboxed) resize."""
    from torchvision.transforms.v2 import functional as F

    return F.resize(image, [side, side], antialias=True)


class ImageDataset(Dataset):
    """(C, H, W) float tensors, resized, augmented (training only) and normalised, with targets."""

    def __init__(self, images: ImageSet, preprocess: v2.Transform, augment: v2.Transform | None = None):
        self.images = images
        self.preprocess = preprocess
        self.augment = augment
        arrays = images.images
        # In-memory sets become one uint8 tensor up front: (N, C, H, W).
        self._tensor = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous() \
            if isinstance(arrays, np.ndarray) else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self._tensor[i] if self._tensor is not None else to_uint8_tensor(self.images.images[i],
                                                                                 self.images.channels)
        if self.augment is not None:
            x = self.augment(x)
        return self.preprocess(x), int(self.images.targets[i])


def channel_stats(images: ImageSet, limit: int = 512, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of (a sample of) the training images."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(images), size=min(limit, len(images)), replace=False)
    pixels = [to_uint8_tensor(images.images[i], images.channels).flatten(1).float() / 255.0 for i in pick]
    flat = torch.cat(pixels, dim=1)  # (C, total pixels)
    std = flat.std(dim=1).clamp_min(1e-3)
    return flat.mean(dim=1).tolist(), std.tolist()
