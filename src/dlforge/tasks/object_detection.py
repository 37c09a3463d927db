"""Object detection: boxes, labels and scores per image, from COCO, YOLO, VOC, CSV or `builtin:shapes`.

Every detector (the YOLO-style one written here, torchvision's Faster R-CNN, RetinaNet, FCOS)
shares one interface (see `dlforge.models.detectors`): losses in training, *candidate*
detections in eval. The confidence and IoU thresholds are applied here, after the model, so
one trained model answers every threshold a user asks for. Large images are cut into tiles
for training and predicted slice by slice, with boxes merged across tile borders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from dlforge.data import shapes  # noqa: F401  (registers builtin:shapes)
from dlforge.data.detection import DetectionSet, read_detection_set
from dlforge.data.images import resize_square, to_uint8_tensor
from dlforge.errors import DlforgeError
from dlforge.pages import Section, figure, table
from dlforge.registry import DETECTORS, TASKS
from dlforge.spec import ModelSpec, SpecBase, StrictModel
from dlforge.tasks.base import Prepared, prediction_settings, significant
from dlforge.tasks.capabilities import Explainable, ExplainTarget
from dlforge.tasks.dense import DenseDataSpec, DenseTask
from dlforge.wire import ImageWire

if TYPE_CHECKING:
    from torchmetrics import Metric, MetricCollection

    from dlforge.run import Run
    from dlforge.tasks.base import Inference

EVAL_CONF, EVAL_IOU = 0.001, 0.7  # mAP is measured over (nearly) every candidate, as COCO does


def _coco_thresholds() -> dict[str, list[float]]:
    """COCO's own IoU and recall thresholds, in float64 as pycocotools has them. torchmetrics' defaults come from
    torch.linspace in float32 (0.31 becomes 0.3100000024), which moves recall ties at the threshold and made its
    mAP differ from pycocotools' in the third decimal."""
    return {"iou_thresholds": np.linspace(0.5, 0.95, 10).tolist(),
            "rec_thresholds": np.linspace(0.0, 1.0, 101).tolist()}


class TilingSpec(StrictModel):
    """Large images with small objects: train on tiles, predict slice by slice."""

    tile: int = Field(ge=32, description="tile side in pixels of the original images")
    overlap: float = Field(0.2, ge=0.0, lt=0.9, description="overlap of neighbouring tiles, as a fraction of a tile")


class DetectionDataSpec(DenseDataSpec):
    source: str = Field(description="builtin:shapes, a COCO .json, a YOLO data.yaml (or its folder), a VOC folder "
                                    "(Annotations/, JPEGImages/), or a .csv of image_path,xmin,ymin,xmax,ymax,label")
    format: Literal["auto", "coco", "yolo", "voc", "csv"] = "auto"
    tiling: TilingSpec | None = None


class DetectorModelSpec(ModelSpec):
    registry = DETECTORS
    reserved = ("num_classes", "image_size", "library_weights")

    name: str = Field("yolo_n", description="yolo_n, yolo_s, fasterrcnn_resnet50_fpn, "
                      "fasterrcnn_mobilenet_v3_large_fpn, retinanet_resnet50_fpn or fcos_resnet50_fpn")


class DetectionPredictSpec(StrictModel):
    """Defaults of `dlforge predict` and the server; each call may override them."""

    conf: float = Field(0.25, ge=0.0, le=1.0, description="keep detections scoring at least this")
    iou: float = Field(0.45, gt=0.0, le=1.0, description="non-maximum suppression IoU threshold, per class")
    max_det: int = Field(300, ge=1, description="at most this many objects per image")


class ObjectDetectionSpec(SpecBase):
    task: Literal["object_detection"] = "object_detection"
    data: DetectionDataSpec
    model: DetectorModelSpec = DetectorModelSpec()
    predict: DetectionPredictSpec = DetectionPredictSpec()

    @model_validator(mode="after")
    def _tile_fits(self) -> ObjectDetectionSpec:
        if self.data.augment.mosaic and self.data.tiling:
            raise ValueError("data.augment.mosaic: not with data.tiling (tiles are already crops)")
        return self


@TASKS.register("object_detection")
class ObjectDetection(DenseTask, Explainable):
    wire = ImageWire()
    spec_class = ObjectDetectionSpec
    default_monitor = "val/map"
    prediction_options = ("conf", "iou", "max_det")
    graph_outputs = ("predictions",)  # (B, A, 4 + C): xyxy boxes in input pixels, then class probabilities
    explained_inputs, explain_method = ("images",), "gradcam"
    export_hint = ("the YOLO-style detectors (yolo_n, yolo_s) export; torchvision's detectors (Faster R-CNN, "
                   "RetinaNet, FCOS) post-process inside the model and are served with the torch backend")

    model_spec = DetectorModelSpec

    @classmethod
    def example_spec(cls, folder: Path) -> dict[str, Any]:
        """A dozen 64 x 64 images of the built-in shapes (circles, squares, triangles) and the smallest YOLO."""
        return {"name": "shapes-detection-example", "task": "object_detection",
                "data": {"source": "builtin:shapes", "builtin": {"count": 12, "size": 64, "max_objects": 2},
                         "image_size": 64, "split": {"val": 0.2, "test": 0.2, "seed": 0}},
                "model": {"name": "yolo_n"},
                "train": {"epochs": 1, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 2e-3}, "seed": 0}}

    # ------------------------------------------------------------ training
    def read(self, source: str | None = None, classes: list[str] | None = None) -> DetectionSet:
        d = self.spec.data
        return read_detection_set(source or d.source, format=d.format if source is None else "auto",
                                  classes=classes or d.classes, on_error=d.on_error, builtin_options=d.builtin)

    def items(self, data: DetectionSet) -> tuple[Sequence[Any], list[dict[str, np.ndarray]]]:
        return data.images, [{"boxes": b, "labels": lab} for b, lab in zip(data.boxes, data.labels, strict=True)]

    def model_args(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"num_classes": len(meta["classes"]), "image_size": meta["preprocessing"]["image_size"]}

    def prepare(self) -> Prepared:
        from dlforge.data.dense_datasets import DetectionDataset

        data, split = self.read_split()
        d = self.spec.data
        tiling = d.tiling.model_dump() if d.tiling else None
        model, meta = self.start(data, split, {"image_size": d.image_size, "tiling": tiling})
        meta["predict"] = self.spec.predict.model_dump()
        tiles = (d.tiling.tile, d.tiling.overlap) if d.tiling else None
        train_idx, val_idx, test_idx = split
        train = DetectionDataset(data.subset(train_idx), d.image_size, d.augment, seed=self.spec.train.seed,
                                 tiling=tiles)
        val = DetectionDataset(data.subset(val_idx), d.image_size, tiling=tiles)
        return Prepared(model, train, val, self.items(data.subset(test_idx)), meta)

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor | None, Any, Any]:
        images, targets = batch  # (B, 3, S, S), B dicts of boxes (n, 4) and labels (n,)
        if model.training:
            losses = model(images, targets)
            return sum(losses.values()), None, targets
        # eval: the best 100 candidates per image, as COCO's mAP counts them
        return None, [select(d, EVAL_CONF, EVAL_IOU, 100) for d in model(images)], targets

    def metrics(self, meta: dict[str, Any]) -> MetricCollection:
        from torchmetrics import MetricCollection

        return MetricCollection({"detection": _mean_ap()}, compute_groups=False)

    # ------------------------------------------------------------ inference
    def preprocess(self, items: Sequence[Any], meta: dict[str, Any]) -> dict[str, Any]:
        images = [to_uint8_tensor(item, 3) for item in items]  # (3, H, W) uint8 each
        sizes = torch.tensor([im.shape[1:] for im in images])  # (B, 2): (H, W)
        if meta["preprocessing"]["tiling"]:
            return {"images": [im.float() / 255 for im in images], "sizes": sizes}  # sliced in `forward`
        side = meta["preprocessing"]["image_size"]
        resized = [resize_square(im, side) for im in images]
        return {"images": torch.stack(resized).float() / 255, "sizes": sizes}  # (B, 3, S, S) in [0, 1]

    def example_inputs(self, meta: dict[str, Any], batch: int = 2) -> dict[str, torch.Tensor]:
        side = meta["preprocessing"]["image_size"]
        images = np.random.default_rng(batch).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
        whole = {**meta, "preprocessing": {**meta["preprocessing"], "tiling": None}}  # tiles reach the graph as S x S
        return {"images": self.preprocess(list(images), whole)["images"]}

    def graph(self, model: nn.Module, meta: dict[str, Any]) -> nn.Module:
        # The YOLO-style detector has a tensor-out core (decoded boxes and class probabilities, before NMS);
        # torchvision's detectors post-process inside and return per-image lists: they stay whole (and do not export).
        raw_graph = getattr(model, "raw_graph", None)
        return raw_graph() if raw_graph is not None else model

    def forward(self, graph: nn.Module, inputs: dict[str, Any], meta: dict[str, Any], **options: Any
                ) -> list[dict[str, Any]]:
        side, tiling = meta["preprocessing"]["image_size"], meta["preprocessing"]["tiling"]
        if tiling:
            from dlforge.data.tiling import sliced_predict

            return [sliced_predict(image, lambda tiles: per_image_candidates(graph(tiles)), tiling["tile"],
                                   tiling["overlap"], side) for image in inputs["images"]]
        detections = per_image_candidates(graph(inputs["images"]))
        for det, (h, w) in zip(detections, inputs["sizes"].tolist(), strict=True):
            scale = torch.tensor([w / side, h / side, w / side, h / side], device=det["boxes"].device)
            det["boxes"] = det["boxes"] * scale  # back to the image's own pixels
        return detections

    def postprocess(self, outputs: list[dict[str, torch.Tensor]], meta: dict[str, Any],
                    **options: Any) -> list[dict[str, Any]]:
        o = prediction_settings(DetectionPredictSpec, meta, options)
        classes = meta["classes"]
        results = []
        for det in outputs:
            det = select(det, o.conf, o.iou, o.max_det)
            results.append({"objects": [
                {"box": [round(float(v), 2) for v in box], "label": classes[int(label)], "score": significant(float(s))}
                for box, label, s in zip(det["boxes"], det["labels"], det["scores"], strict=True)]})
        return results

    def explain_target(self, outputs: list[dict[str, torch.Tensor]], meta: dict[str, Any], target: str | None = None,
                       box: int | None = None, **options: Any) -> ExplainTarget:
        """The score of detected object number `box` (0: the best; of class `target` if given), as the prediction
        lists them; in other images, the best score of a candidate of its class overlapping it (IoU >= 0.5)."""
        from torchvision.ops import box_iou

        o, classes = prediction_settings(DetectionPredictSpec, meta, options), meta["classes"]
        if target is not None and target not in classes:
            raise DlforgeError(f"target {target!r} is not a class of this model; classes: {', '.join(classes)}")
        det = select(outputs[0], o.conf, o.iou, o.max_det)
        found = [i for i, label in enumerate(det["labels"].tolist()) if target is None or classes[label] == target]
        n = box or 0
        if not 0 <= n < len(found):
            raise DlforgeError(f"box {n}: {len(found)} object(s){f' of class {target}' if target else ''} detected at "
                               f"conf {o.conf}" + (f"; choose 0 to {len(found) - 1}" if found else ""))
        chosen, label = det["boxes"][found[n]].detach(), int(det["labels"][found[n]])

        def score(out: list[dict[str, torch.Tensor]]) -> torch.Tensor:
            best = []
            for d in out:
                match = (d["labels"] == label) & (box_iou(d["boxes"], chosen[None])[:, 0] >= 0.5)
                best.append(d["scores"][match].max() if match.any() else d["scores"].sum() * 0)
            return torch.stack(best)

        return ExplainTarget({"box": [round(float(v), 2) for v in chosen], "label": classes[label], "rank": n,
                              "score": "detection score"}, score)

    def annotate(self, item: Any, prediction: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        return {"boxes": draw_boxes(to_uint8_tensor(item, 3), prediction["objects"], meta["classes"])}

    # ------------------------------------------------------------ evaluation and report
    def evaluate(self, predictor: Inference, items: Sequence[Any], targets: Any, plots_dir: Path) -> dict[str, Any]:
        from dlforge import plots

        classes = predictor.meta["classes"]
        candidates = predictor.outputs(items)
        preds = [select(c, EVAL_CONF, EVAL_IOU, 100) for c in candidates]
        truth = [{"boxes": torch.as_tensor(t["boxes"]).reshape(-1, 4), "labels": torch.as_tensor(t["labels"])}
                 for t in targets]
        result = detection_metrics(preds, truth, classes)
        plots_dir.mkdir(parents=True, exist_ok=True)
        plots.pr_curves(result.pop("pr_curves"), plots_dir / "pr_curves.png")
        self._plot_examples(items[:16], targets[:16], self.postprocess(candidates[:16], predictor.meta), classes,
                            plots_dir / "detections.png")
        return result

    def _plot_examples(self, items: Sequence[Any], targets: list[dict[str, np.ndarray]], shown: list[dict[str, Any]],
                       classes: list[str], path: Path) -> None:
        from dlforge import plots

        pictures, titles, alert = [], [], []
        for item, t, p in zip(items, targets, shown, strict=True):
            pictures.append(draw_boxes(to_uint8_tensor(item, 3), p["objects"], classes,
                                       truth=torch.as_tensor(t["boxes"]).reshape(-1, 4)))
            titles.append(f"{len(p['objects'])} found, {len(t['labels'])} true")
            alert.append(len(p["objects"]) != len(t["labels"]))
        plots.image_grid(pictures, titles, alert, path, cols=4, size=3.0)

    def report_sections(self, run: Run) -> list[Section]:
        ev = run.read_eval()
        if ev is None:
            return []
        m = ev["metrics"]
        summary = table(["metric", "value"], [[k, f"{v:.4f}"] for k, v in m.items()])
        per_class = table(["class", "AP@0.5", "AP@0.5:0.95", "objects"],
                          [[c["class"], f"{c['ap50']:.3f}", f"{c['ap']:.3f}", c["objects"]] for c in ev["per_class"]])
        pics = [figure(run.path / "plots" / "detections.png",
                       "Test images: predictions (a colour per class, with scores) over the true boxes (white)"),
                figure(run.path / "plots" / "pr_curves.png", "Precision-recall per class at IoU 0.5")]
        return [Section("Detection", f"<p>On {ev['n']} images ({ev['data']}).</p>" + summary + per_class
                        + "".join(pics))]


def _mean_ap() -> Metric:
    """torchmetrics' MeanAveragePrecision, reduced to the scalars a training log holds."""
    from torchmetrics.detection import MeanAveragePrecision

    class MeanAP(MeanAveragePrecision):
        def compute(self) -> dict[str, torch.Tensor]:
            result = super().compute()
            return {k: result[k] for k in ("map", "map_50", "map_75")}

    return MeanAP(box_format="xyxy", iou_type="bbox", **_coco_thresholds())


def per_image_candidates(out: torch.Tensor | list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """A detection graph's output -> per image {boxes, scores, labels} candidates. Raw predictions (B, A, 4 + C)
    go through the candidate selection (score floor, class-wise NMS) here, in torch; a detector that already
    returns per-image candidates passes through."""
    if not torch.is_tensor(out):
        return out
    from dlforge.models.yolo import candidates

    return [candidates(raw) for raw in out.float()]


def select(det: dict[str, torch.Tensor], conf: float, iou: float, max_det: int) -> dict[str, torch.Tensor]:
    """Candidates -> detections: score >= conf, class-wise NMS at `iou`, the best `max_det`."""
    from torchvision.ops import batched_nms

    keep = det["scores"] >= conf
    boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["labels"][keep]
    keep = batched_nms(boxes.float(), scores.float(), labels, iou)[:max_det]  # sorted by score
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def detection_metrics(preds: list[dict[str, torch.Tensor]], truth: list[dict[str, torch.Tensor]],
                      classes: list[str]) -> dict[str, Any]:
    """COCO mAP (torchmetrics, pycocotools backend): overall, per class, and precision-recall curves."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, extended_summary=True,
                                  **_coco_thresholds())
    metric.update(preds, truth)
    r = metric.compute()
    # precision: (IoU thresholds T=10, recall points R=101, classes K, area ranges A=4, max dets M=3); -1 = no data
    precision = r["precision"][0, :, :, 0, -1]  # IoU 0.5, all areas, 100 detections: (R, K)
    present = r["classes"].tolist()  # classes seen in predictions or truth, in the order of the K axis
    objects = np.bincount(torch.cat([t["labels"] for t in truth]).numpy().astype(int), minlength=len(classes))
    per_class, curves = [], {}
    for i, k in enumerate(present):
        p = precision[:, i]
        ap50 = float(p[p > -1].mean()) if (p > -1).any() else 0.0
        per_class.append({"class": classes[k], "ap": max(float(r["map_per_class"].reshape(-1)[i]), 0.0),
                          "ap50": ap50, "objects": int(objects[k])})
        curves[classes[k]] = p.clamp_min(0).tolist()
    metrics = {k: float(r[k]) for k in ("map", "map_50", "map_75", "mar_100")}
    return {"n": len(truth), "metrics": metrics, "per_class": per_class, "pr_curves": curves,
            "headline": {"name": "map_50", "value": metrics["map_50"]}}


def draw_boxes(image: torch.Tensor, objects: list[dict[str, Any]], classes: list[str],
               truth: torch.Tensor | None = None) -> np.ndarray:
    """(3, H, W) uint8 -> (H, W, 3): the true boxes (n, 4) in white, under the predicted objects in a colour
    per class with label and score."""
    from torchvision.utils import draw_bounding_boxes

    from dlforge.plots import palette

    colours = palette(len(classes))
    width = max(1, round(max(image.shape[1:]) / 200))
    if truth is not None and truth.numel():
        image = draw_bounding_boxes(image, truth, colors="white", width=width)
    if objects:
        image = draw_bounding_boxes(image, torch.tensor([o["box"] for o in objects]),
                                    [f"{o['label']} {o['score']:.2f}" for o in objects],
                                    colors=[colours[classes.index(o["label"])] for o in objects], width=width)
    return image.permute(1, 2, 0).numpy()
