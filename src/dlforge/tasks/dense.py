"""What detection and segmentation share: a labelled set read from the spec, split at random
(no class to stratify on), and a model from the task's registry with its starting weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator
from torch import nn

from dlforge.data.augment import DenseAugmentSpec
from dlforge.data.split import split_data
from dlforge.models.pretrained import load_pretrained
from dlforge.spec import LIBRARY, DataSpec, ModelSpec, resolve_path
from dlforge.tasks.base import Task
from dlforge.tasks.capabilities import Annotated, Exportable, Profiled, Reported


class DenseDataSpec(DataSpec):
    """`data:` of detection and segmentation; each task names its sources in `source`'s description."""

    source: str
    builtin: dict[str, Any] = Field(default_factory=dict,
                                    description="options of a builtin: source, e.g. {count: 600, size: 128}")
    classes: list[str] | None = Field(None, description="label order; default: as the source lists them")
    image_size: int = Field(640, ge=32, multiple_of=32, description="model input side (images are resized)")
    on_error: Literal["error", "skip"] = Field("error", description="bad images, boxes or masks: stop, or skip "
                                                                    "and count")
    augment: DenseAugmentSpec = DenseAugmentSpec()

    _source = field_validator("source")(resolve_path)


class DenseTask(Task, Exportable, Profiled, Annotated, Reported):
    model_spec: ClassVar[type[ModelSpec]]

    def read(self, source: str | None = None, classes: list[str] | None = None) -> Any:
        """The spec's data (or `source`, with the model's `classes`) as a DetectionSet or SegmentationSet."""
        raise NotImplementedError

    def items(self, data: Any) -> tuple[Sequence[Any], Sequence[Any]]:
        """(inputs, targets) of a set, as `evaluate` takes them."""
        raise NotImplementedError

    def model_args(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The factory arguments the task fills in (the model spec's `reserved`, but library_weights)."""
        raise NotImplementedError

    def read_split(self) -> tuple[Any, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        data = self.read()
        return data, split_data(np.zeros(len(data), dtype=np.int64), self.spec.data)

    def start(self, data: Any, split: tuple[np.ndarray, ...], preprocessing: dict[str, Any]
              ) -> tuple[nn.Module, dict[str, Any]]:
        """The model with its first weights (library or `model.pretrained`), and the run's metadata."""
        m = self.spec.model
        meta = {"classes": data.classes, "model": m.name, "model_kwargs": m.kwargs, "preprocessing": preprocessing,
                "sizes": dict(zip(("train", "val", "test"), map(len, split), strict=True)),
                "skipped": [{"item": f, "reason": r} for f, r in data.skipped]}
        model = self.model(meta, library_weights=m.pretrained == LIBRARY)
        if m.pretrained not in (None, LIBRARY):
            meta["pretrained"] = load_pretrained(model, m.pretrained, data.classes)
        return model, meta

    def build_model(self, meta: dict[str, Any]) -> nn.Module:
        return self.model(meta)

    def model(self, meta: dict[str, Any], library_weights: bool = False) -> nn.Module:
        return self.model_spec.build(meta["model"], meta["model_kwargs"], library_weights=library_weights,
                                     **self.model_args(meta))

    def evaluation_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any]:
        if source is None:
            data, (_, _, test_idx) = self.read_split()
            return self.items(data.subset(test_idx))
        return self.items(self.read(source, classes=meta["classes"]))
