"""Semantic segmentation: a class for every pixel, from image/mask folders, COCO polygons or `builtin:shapes`.

Models (the U-Net written here, torchvision's DeepLabV3 and LR-ASPP) map (B, 3, S, S) images in
[0, 1] to (B, K, S, S) logits. Metrics are computed over every pixel of the split at once
(one confusion matrix, as mmsegmentation and Cityscapes do), ignoring `ignore_index` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from dlforge.data import shapes  # noqa: F401  (registers builtin:shapes)
from dlforge.data.augment import DenseAugmentSpec
from dlforge.data.detection import SegmentationSet, read_mask, read_segmentation_set
from dlforge.data.images import resize_square, to_uint8_tensor
from dlforge.pages import Section, figure, table
from dlforge.registry import SEGMENTERS, TASKS
from dlforge.spec import ModelSpec, SpecBase
from dlforge.tasks.base import Prepared, significant
from dlforge.tasks.dense import DenseDataSpec, DenseTask
from dlforge.wire import ImageWire

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

    from dlforge.run import Run
    from dlforge.tasks.base import Inference

IGNORE_INDEX = 255  # the mask value no loss or metric counts (SegmentationSet.ignore_index)


class SegmentationDataSpec(DenseDataSpec):
    source: str = Field(description="builtin:shapes, a folder with images/ and masks/ (index-colour PNGs), "
                                    "or a COCO .json with polygons")
    classes: list[str] | None = Field(None, description="class of each mask value (default: classes.txt)")

    @field_validator("augment")
    @classmethod
    def _no_mosaic(cls, augment: DenseAugmentSpec) -> DenseAugmentSpec:
        if augment.mosaic:
            raise ValueError("mosaic: only for object detection")
        return augment


class SegmenterModelSpec(ModelSpec):
    registry = SEGMENTERS
    reserved = ("num_classes", "library_weights")

    name: str = Field("unet", description="unet, deeplabv3_resnet50, deeplabv3_mobilenet_v3_large or "
                                          "lraspp_mobilenet_v3_large")


class SemanticSegmentationSpec(SpecBase):
    task: Literal["semantic_segmentation"] = "semantic_segmentation"
    data: SegmentationDataSpec
    model: SegmenterModelSpec = SegmenterModelSpec()
    loss: Literal["ce", "dice", "ce+dice"] = Field("ce+dice", description="cross-entropy, soft Dice, or their sum")


@TASKS.register("semantic_segmentation")
class SemanticSegmentation(DenseTask):
    wire = ImageWire()
    spec_class = SemanticSegmentationSpec
    default_monitor = "val/miou"
    graph_outputs = ("logits",)  # (B, K, S, S)

    model_spec = SegmenterModelSpec

    @classmethod
    def example_spec(cls, folder: Path) -> dict[str, Any]:
        """A dozen 64 x 64 images of the built-in shapes, their masks, and a narrow U-Net."""
        return {"name": "shapes-segmentation-example", "task": "semantic_segmentation",
                "data": {"source": "builtin:shapes", "builtin": {"count": 12, "size": 64, "max_objects": 2},
                         "image_size": 64, "split": {"val": 0.2, "test": 0.2, "seed": 0}},
                "model": {"name": "unet", "kwargs": {"width": 8, "depth": 3}},
                "train": {"epochs": 1, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 3e-3}, "seed": 0}}

    # ------------------------------------------------------------ training
    def read(self, source: str | None = None, classes: list[str] | None = None) -> SegmentationSet:
        d = self.spec.data
        return read_segmentation_set(source or d.source, classes=classes or d.classes, on_error=d.on_error,
                                     builtin_options=d.builtin)

    def items(self, data: SegmentationSet) -> tuple[Sequence[Any], Sequence[Any]]:
        return data.images, data.masks

    def model_args(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"num_classes": len(meta["classes"])}

    def prepare(self) -> Prepared:
        from dlforge.data.dense_datasets import SegmentationDataset

        data, split = self.read_split()
        d = self.spec.data
        model, meta = self.start(data, split, {"image_size": d.image_size, "ignore_index": data.ignore_index})
        train_idx, val_idx, test_idx = split
        train = SegmentationDataset(data.subset(train_idx), d.image_size, d.augment)
        val = SegmentationDataset(data.subset(val_idx), d.image_size)
        return Prepared(model, train, val, self.items(data.subset(test_idx)), meta)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # outputs: (B, K, H, W) logits; targets: (B, H, W) class indexes, ignore_index where unknown
        ignore = IGNORE_INDEX
        total = outputs.new_zeros(())
        if "ce" in self.spec.loss:
            total = total + F.cross_entropy(outputs, targets, ignore_index=ignore)
        if "dice" in self.spec.loss:
            total = total + dice_loss(outputs, targets, ignore)
        return total

    def metrics(self, meta: dict[str, Any]) -> MetricCollection:
        return _pixel_metrics(len(meta["classes"]), meta["preprocessing"]["ignore_index"])

    # ------------------------------------------------------------ inference
    def preprocess(self, items: Sequence[Any], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
        images = [to_uint8_tensor(item, 3) for item in items]  # (3, H, W) uint8 each
        side = meta["preprocessing"]["image_size"]
        return {"images": torch.stack([resize_square(im, side) for im in images]).float() / 255,  # (B, 3, S, S)
                "sizes": torch.tensor([im.shape[1:] for im in images])}  # (B, 2): (H, W)

    def example_inputs(self, meta: dict[str, Any], batch: int = 2) -> dict[str, torch.Tensor]:
        side = meta["preprocessing"]["image_size"]
        images = np.random.default_rng(batch).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
        return {"images": self.preprocess(list(images), meta)["images"]}

    def forward(self, graph: nn.Module, inputs: dict[str, torch.Tensor], meta: dict[str, Any], **options: Any
                ) -> list[torch.Tensor]:
        logits = graph(inputs["images"]).float()  # (B, K, S, S)
        # Each image's class mask at its own size: upsample the logits, then take the best class.
        return [F.interpolate(lg[None], size=(h, w), mode="bilinear", align_corners=False)[0].argmax(0).to(torch.uint8)
                for lg, (h, w) in zip(logits, inputs["sizes"].tolist(), strict=True)]  # (H, W) each

    def postprocess(self, outputs: list[torch.Tensor], meta: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
        from pycocotools import mask as coco_mask

        classes = meta["classes"]
        results = []
        for mask in outputs:
            m = mask.numpy()
            present = np.flatnonzero(np.bincount(m.ravel(), minlength=len(classes)))
            rle = {}
            for k in present:
                code = coco_mask.encode(np.asfortranarray(m == k))  # COCO run-length encoding, column-major
                rle[classes[k]] = {"size": [int(s) for s in code["size"]], "counts": code["counts"].decode()}
            results.append({"size": list(m.shape),
                            "pixels": {classes[k]: significant(float((m == k).mean())) for k in present},
                            "rle": rle})
        return results

    def annotate(self, item: Any, prediction: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        from dlforge.plots import palette

        mask = decode_mask(prediction, meta["classes"])
        png = Image.fromarray(mask, mode="P")  # index-colour: pixel value = class index
        png.putpalette([c for rgb in palette(len(meta["classes"])) for c in rgb])
        return {"mask": png, "overlay": overlay(to_uint8_tensor(item, 3), mask, len(meta["classes"]))}

    # ------------------------------------------------------------ evaluation and report
    def evaluate(self, predictor: Inference, items: Sequence[Any], targets: Any, plots_dir: Path) -> dict[str, Any]:
        from dlforge import plots

        classes, ignore = predictor.meta["classes"], predictor.meta["preprocessing"]["ignore_index"]
        k = len(classes)
        metric = _pixel_metrics(k, ignore, per_class=True)
        counts = np.zeros(k, dtype=np.int64)
        predicted = predictor.outputs(items)
        truths = [torch.as_tensor(_mask(t)).long() for t in targets]
        for pred, truth in zip(predicted, truths, strict=True):
            if pred.shape != truth.shape:
                raise ValueError(f"a predicted mask is {tuple(pred.shape)}, its true mask {tuple(truth.shape)}")
            metric.update(pred.long()[None], truth[None])
            counts += np.bincount(truth[truth != ignore].numpy(), minlength=k)[:k]
        r = {name: value for name, value in metric.compute().items()}
        per_class = [{"class": c, "iou": float(r["iou"][i]), "dice": float(r["dice_per_class"][i]),
                      "pixels": int(counts[i])} for i, c in enumerate(classes)]
        metrics = {"miou": float(r["miou"]), "dice": float(r["dice"]), "pixel_accuracy": float(r["pixel_accuracy"])}
        plots_dir.mkdir(parents=True, exist_ok=True)
        plots.iou_bars([c["class"] for c in per_class], [c["iou"] for c in per_class], plots_dir / "iou.png")
        shown = range(min(8, len(items)))
        plots.mask_rows([to_uint8_tensor(items[i], 3).permute(1, 2, 0).numpy() for i in shown],
                        [overlay_only(truths[i].numpy(), k, ignore) for i in shown],
                        [overlay_only(predicted[i].numpy(), k, ignore) for i in shown], plots_dir / "masks.png")
        return {"n": len(items), "metrics": metrics, "per_class": per_class,
                "headline": {"name": "miou", "value": metrics["miou"]}}

    def report_sections(self, run: Run) -> list[Section]:
        ev = run.read_eval()
        if ev is None:
            return []
        summary = table(["metric", "value"], [[k, f"{v:.4f}"] for k, v in ev["metrics"].items()])
        per_class = table(["class", "IoU", "Dice", "pixels"],
                          [[c["class"], f"{c['iou']:.3f}", f"{c['dice']:.3f}", c["pixels"]] for c in ev["per_class"]])
        pics = [figure(run.path / "plots" / "masks.png", "Test images: image, true mask, predicted mask"),
                figure(run.path / "plots" / "iou.png", "IoU per class")]
        return [Section("Segmentation", f"<p>On {ev['n']} images ({ev['data']}).</p>" + summary + per_class
                        + "".join(pics))]


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, averaged over the classes present in the batch (Milletari et al., 2016).

    logits: (B, K, H, W); targets: (B, H, W). Ignored pixels count for no class.
    """
    k = logits.shape[1]
    valid = (targets != ignore_index).unsqueeze(1)  # (B, 1, H, W)
    probs = logits.float().softmax(1) * valid
    onehot = F.one_hot(targets.clamp(0, k - 1), k).permute(0, 3, 1, 2) * valid  # (B, K, H, W)
    inter = (probs * onehot).sum((0, 2, 3))  # (K,)
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + eps) / (total + eps)
    present = onehot.sum((0, 2, 3)) > 0
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def _pixel_metrics(k: int, ignore_index: int, per_class: bool = False) -> MetricCollection:
    """mIoU (Jaccard), Dice (F1) and pixel accuracy over all pixels, ignoring `ignore_index` (torchmetrics)."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

    kw = {"num_classes": k, "ignore_index": ignore_index, "validate_args": False}
    metrics = {"miou": MulticlassJaccardIndex(average="macro", **kw),
               "dice": MulticlassF1Score(average="macro", **kw),
               "pixel_accuracy": MulticlassAccuracy(average="micro", **kw)}
    if per_class:
        metrics |= {"iou": MulticlassJaccardIndex(average="none", **kw),
                    "dice_per_class": MulticlassF1Score(average="none", **kw)}
    return MetricCollection(metrics, compute_groups=False)


def decode_mask(prediction: dict[str, Any], classes: list[str]) -> np.ndarray:
    """A prediction's run-length encodings -> its (H, W) uint8 class mask."""
    from pycocotools import mask as coco_mask

    mask = np.zeros(prediction["size"], dtype=np.uint8)
    for name, rle in prediction["rle"].items():
        mask[coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}) > 0] = classes.index(name)
    return mask


def overlay_only(mask: np.ndarray, k: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) class mask -> (H, W, 3) colours (black for the ignored pixels)."""
    from dlforge.plots import palette

    colours = np.array([*palette(k), *[(0, 0, 0)] * (256 - k)], dtype=np.uint8)
    return colours[np.where(mask == ignore_index, 255, mask)]


def overlay(image: torch.Tensor, mask: np.ndarray, k: int) -> np.ndarray:
    """(3, H, W) uint8 image with the non-background classes of `mask` blended in."""
    from torchvision.utils import draw_segmentation_masks

    from dlforge.plots import palette

    masks = torch.from_numpy(np.stack([mask == c for c in range(1, k)])) if k > 1 else torch.zeros(0, *mask.shape)
    drawn = draw_segmentation_masks(image, masks.bool(), alpha=0.5, colors=palette(k)[1:] or None)
    return drawn.permute(1, 2, 0).numpy()


def _mask(target: Any) -> np.ndarray:
    return read_mask(target) if isinstance(target, str | Path) else np.asarray(target)
