"""Image classification: a folder per class, a CSV/Parquet of path,label, or `builtin:digits`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from dlforge.data.images import ImageDataset, ImageSet, channel_stats, read_image_set, to_uint8_tensor
from dlforge.data.split import split_data
from dlforge.errors import DataError
from dlforge.models.pretrained import load_pretrained
from dlforge.registry import MODELS, TASKS
from dlforge.spec import LIBRARY, DataSpec, ModelSpec, SpecBase, StrictModel, resolve_path
from dlforge.tasks.base import Prepared
from dlforge.tasks.classification import ClassificationTask
from dlforge.wire import ImageWire

if TYPE_CHECKING:
    from torchvision.transforms import v2

log = logging.getLogger("dlforge")


class AugmentSpec(StrictModel):
    """Training-time augmentation (torchvision.transforms.v2); off by default."""

    hflip: bool = False
    vflip: bool = False
    rotate: float = Field(0.0, ge=0.0, le=180.0, description="max rotation in degrees")
    translate: float = Field(0.0, ge=0.0, lt=0.5, description="max shift as a fraction of the size")
    scale: tuple[float, float] | None = Field(None, description="random zoom range, e.g. [0.9, 1.1]")
    color_jitter: float = Field(0.0, ge=0.0, le=1.0, description="brightness/contrast/saturation jitter")

    def transform(self) -> v2.Transform | None:
        from torchvision.transforms import v2

        steps: list[v2.Transform] = []
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if self.vflip:
            steps.append(v2.RandomVerticalFlip())
        if self.rotate or self.translate or self.scale:
            steps.append(v2.RandomAffine(self.rotate, (self.translate, self.translate) if self.translate else None,
                                         self.scale))
        if self.color_jitter:
            j = self.color_jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
        return v2.Compose(steps) if steps else None


class ImageDataSpec(DataSpec):
    source: str = Field(description="builtin:digits, a folder of class folders, or a .csv/.parquet of path,label")
    path_column: str = "path"
    label_column: str = "label"
    image_size: int | tuple[int, int] | None = Field(
        None, description="resize to this (H, W); null: the images' own size, which must then be uniform")
    on_error: Literal["error", "skip"] = Field("error", description="unreadable images: stop, or skip and count")
    augment: AugmentSpec = AugmentSpec()

    _source = field_validator("source")(resolve_path)


class ClassifierModelSpec(ModelSpec):
    registry = MODELS
    reserved = ("num_classes", "in_channels", "dropout", "library_weights")

    name: str = Field("resnet_small", description="resnet_small, timm:<name> or torchvision:<name>")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class ImageClassificationSpec(SpecBase):
    task: Literal["image_classification"] = "image_classification"
    data: ImageDataSpec
    model: ClassifierModelSpec = ClassifierModelSpec()


@TASKS.register("image_classification")
class ImageClassification(ClassificationTask):
    spec_class = ImageClassificationSpec
    wire = ImageWire()

    @classmethod
    def example_spec(cls, folder: Path) -> dict[str, Any]:
        """The digits (8 x 8, built in) and a narrow resnet_small."""
        return {"name": "digits-example", "task": "image_classification",
                "data": {"source": "builtin:digits", "split": {"val": 0.1, "test": 0.2, "seed": 0}},
                "model": {"name": "resnet_small", "kwargs": {"width": 8}},
                "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 3e-3}, "seed": 0}}

    def _read(self, source: str, classes: list[str] | None = None) -> ImageSet:
        data = self.spec.data
        return read_image_set(source, path_column=data.path_column, label_column=data.label_column,
                              on_error=data.on_error, classes=classes)

    def _read_split(self) -> tuple[ImageSet, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        images = self._read(self.spec.data.source)
        return images, split_data(images.targets, self.spec.data)

    def prepare(self) -> Prepared:
        images, (train_idx, val_idx, test_idx) = self._read_split()
        data, m = self.spec.data, self.spec.model
        size = _image_size(data.image_size, images)
        meta = {"classes": images.classes, "model": m.name, "model_kwargs": m.kwargs,
                "preprocessing": {"image_size": list(size), "channels": images.channels},
                "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
                "skipped": [{"file": f, "reason": r} for f, r in images.skipped]}
        model = self._model(meta, library_weights=m.pretrained == LIBRARY)
        if m.pretrained not in (None, LIBRARY):
            meta["pretrained"] = load_pretrained(model, m.pretrained, images.classes)
        train = images.subset(train_idx)
        # Pretrained backbones expect their own pixel statistics; otherwise use the training data's.
        mean, std = getattr(model, "normalization", None) or channel_stats(train, seed=self.spec.train.seed)
        meta["preprocessing"].update(mean=mean, std=std)
        prep = _preprocess(meta)
        return Prepared(model, ImageDataset(train, prep, data.augment.transform()),
                        ImageDataset(images.subset(val_idx), prep), _items(images.subset(test_idx)), meta)

    def build_model(self, meta: dict[str, Any]) -> nn.Module:
        return self._model(meta)

    def _model(self, meta: dict[str, Any], library_weights: bool = False) -> nn.Module:
        return ClassifierModelSpec.build(meta["model"], meta["model_kwargs"], num_classes=len(meta["classes"]),
                                         in_channels=meta["preprocessing"]["channels"],
                                         dropout=self.spec.model.dropout, library_weights=library_weights)

    def preprocess(self, items: Sequence[Any], meta: dict[str, Any]) -> torch.Tensor:
        prep, channels = _preprocess(meta), meta["preprocessing"]["channels"]
        images = [to_uint8_tensor(item, channels) for item in items]  # (C, H, W) uint8 each
        # One transform call per distinct input size, on the (n, C, H, W) stack: per-image calls cost more
        # than the resizing itself for small images (a server's batch of 32 digits).
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(tuple(image.shape), []).append(i)
        out: list[torch.Tensor] = [None] * len(images)
        for index in by_size.values():
            for i, x in zip(index, prep(torch.stack([images[i] for i in index])), strict=True):
                out[i] = x
        return torch.stack(out)  # (B, C, H, W)

    def example_inputs(self, meta: dict[str, Any], batch: int = 2) -> dict[str, torch.Tensor]:
        (h, w), c = meta["preprocessing"]["image_size"], meta["preprocessing"]["channels"]
        images = np.random.default_rng(batch).integers(0, 256, (batch, h, w, c), dtype=np.uint8)
        return {"images": self.preprocess(list(images), meta)}

    def evaluation_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any]:
        return _items(self._evaluation_set(meta, source))

    def audit_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any, Any]:
        """A .csv/.parquet of path,label carries its other columns (groups) beside the images."""
        images = self._evaluation_set(meta, source)
        return (*_items(images), images.columns)

    def _evaluation_set(self, meta: dict[str, Any], source: str | None) -> ImageSet:
        if source is None:
            images, (_, _, test_idx) = self._read_split()
            images = images.subset(test_idx)
        else:
            images = self._read(source, classes=meta["classes"])
        if images.classes != meta["classes"]:
            raise DataError(f"{self.spec.data.source}: labels {images.classes} now differ from the model's "
                            f"{meta['classes']}")
        return images

    def plot_examples(self, items: Sequence[Any], targets: np.ndarray, probs: np.ndarray, classes: list[str],
                      path: Path) -> None:
        from dlforge import plots

        predicted = probs.argmax(1)
        wrong = np.flatnonzero(predicted != targets)
        right = np.flatnonzero(predicted == targets)
        order = np.concatenate([wrong, right])[:48]
        images = [to_uint8_tensor(items[i], 3).permute(1, 2, 0).numpy() for i in order]
        titles = [f"{classes[predicted[i]]} ({probs[i].max():.2f})\ntrue {classes[targets[i]]}" for i in order]
        plots.image_grid(images, titles, [bool(predicted[i] != targets[i]) for i in order], path)


def _items(images: ImageSet) -> tuple[Sequence[Any], np.ndarray]:
    return images.images, images.targets


def _image_size(size: int | tuple[int, int] | None, images: ImageSet) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if size is not None:
        return tuple(size)
    if images.native_size is None:
        raise DataError("data.image_size: the images differ in size; set data.image_size (e.g. 224)")
    return images.native_size


def _preprocess(meta: dict[str, Any]) -> v2.Transform:
    """uint8 (C, H, W) -> resized, normalised float (C, H, W): the same at training and inference."""
    from torchvision.transforms import v2

    p = meta["preprocessing"]
    return v2.Compose([v2.Resize(p["image_size"], antialias=True), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(p["mean"], p["std"])])
