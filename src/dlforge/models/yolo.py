"""A YOLO-style single-stage detector written here, after Ultralytics YOLOv8.

Top to bottom:
- blocks: `Conv` (Conv2d without bias + BatchNorm + SiLU), `Bottleneck`, `C2f` (split, a chain of bottlenecks,
  concatenate every intermediate), `SPPF` (three chained 5x5 max-pools, concatenated);
- `Backbone`: strided convs and C2f blocks, returning feature maps at strides 8, 16 and 32 (SPPF on the last);
- `PANFPN` neck: top-down (upsample, concatenate, C2f) then bottom-up (stride-2 conv, concatenate, C2f);
- `Head`: decoupled per level. The box branch predicts, for each feature-map cell, the left/top/right/bottom
  distances from the cell centre (the "anchor point": anchor-free, one per cell) as a distribution over
  `REG_MAX` = 16 bins of one stride each (Distribution Focal Loss, Li et al. 2020); the box is decoded from the
  distribution's expectation. The class branch predicts num_classes sigmoid logits (no objectness, no background);
- `TaskAlignedAssigner` (TOOD, Feng et al. 2021): per ground-truth box, the top-k anchor points whose centre lies
  inside it (sides under 8 px count as 16 here), ranked by score^alpha * IoU^beta of the current prediction; an
  anchor picked by several boxes goes to the one its predicted box overlaps most; the class target is soft: the
  alignment metric rescaled so that each box's best anchor gets that anchor's IoU;
- loss: BCE on the soft class targets, CIoU loss and DFL on the positive anchors, both weighted by the soft targets.

Sizes are YOLOv8's depth/width multiples (`SIZES`). Pixel boxes everywhere are xyxy in input pixels; IoU, CIoU and
NMS come from torchvision.ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.errors import DlforgeError
from dlforge.registry import DETECTORS

# name -> (depth multiple, width multiple, max channels), YOLOv8's model scales.
SIZES: dict[str, tuple[float, float, int]] = {"yolo_n": (0.33, 0.25, 1024), "yolo_s": (0.33, 0.50, 1024)}
CHANNELS = (64, 128, 256, 512, 1024)  # stem (stride 2), strides 4, 8, 16, 32: before the width multiple
REPEATS = (3, 6, 6, 3, 3)  # bottlenecks per C2f at strides 4, 8, 16, 32 and in the neck: before the depth multiple
STRIDES = (8, 16, 32)
REG_MAX = 16  # bins of the box-side distributions: distances 0..15 strides
TOPK, ALPHA, BETA = 10, 0.5, 6.0  # task-aligned assigner
GAIN_BOX, GAIN_CLS, GAIN_DFL = 7.5, 0.5, 1.5
MAX_CANDIDATES = 3000  # (anchor, class) pairs kept per image before NMS
SCORE_THRESH, NMS_THRESH, MAX_DET = 0.001, 0.7, 300  # candidates: the task applies the user's thresholds after


class Conv(nn.Sequential):
    """Conv2d (no bias, 'same' padding) + BatchNorm + SiLU: (B, c_in, H, W) -> (B, c_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False),
                         nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03), nn.SiLU(inplace=True))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1, self.cv2, self.shortcut = Conv(c, c, 3), Conv(c, c, 3), shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """CSP block with two convs: a 1x1 conv split into two halves, n bottlenecks chained on the second half,
    every intermediate concatenated and fused by a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool) -> None:
        super().__init__()
        self.c = c_out // 2
        self.cv1 = Conv(c_in, 2 * self.c)
        self.cv2 = Conv((2 + n) * self.c, c_out)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))  # 2 x (B, c, H, W)
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))  # (B, (2 + n) c, H, W) -> (B, c_out, H, W)


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: max-pools of growing receptive field (5, 9, 13), concatenated."""

    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        self.cv1, self.cv2 = Conv(c_in, c_in // 2), Conv(c_in // 2 * 4, c_out)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Backbone(nn.Module):
    """(B, 3, H, W) -> feature maps (B, c[2], H/8, W/8), (B, c[3], H/16, W/16), (B, c[4], H/32, W/32)."""

    def __init__(self, c: tuple[int, ...], n: tuple[int, ...]) -> None:
        super().__init__()
        self.stem = Conv(3, c[0], 3, 2)  # stride 2
        self.stage2 = nn.Sequential(Conv(c[0], c[1], 3, 2), C2f(c[1], c[1], n[0], True))  # stride 4
        self.stage3 = nn.Sequential(Conv(c[1], c[2], 3, 2), C2f(c[2], c[2], n[1], True))  # stride 8
        self.stage4 = nn.Sequential(Conv(c[2], c[3], 3, 2), C2f(c[3], c[3], n[2], True))  # stride 16
        self.stage5 = nn.Sequential(Conv(c[3], c[4], 3, 2), C2f(c[4], c[4], n[3], True), SPPF(c[4], c[4]))  # 32

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.stage3(self.stage2(self.stem(x)))
        p4 = self.stage4(p3)
        return p3, p4, self.stage5(p4)


class PANFPN(nn.Module):
    """Path-aggregation feature pyramid: top-down from stride 32 to 8, then bottom-up back to 32. Same shapes out."""

    def __init__(self, c: tuple[int, ...], n: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top_down4 = C2f(c[4] + c[3], c[3], n, False)
        self.top_down3 = C2f(c[3] + c[2], c[2], n, False)
        self.down3, self.bottom_up4 = Conv(c[2], c[2], 3, 2), C2f(c[2] + c[3], c[3], n, False)
        self.down4, self.bottom_up5 = Conv(c[3], c[3], 3, 2), C2f(c[3] + c[4], c[4], n, False)

    def forward(self, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t4 = self.top_down4(torch.cat([self.up(p5), p4], 1))  # (B, c[3], H/16, W/16)
        n3 = self.top_down3(torch.cat([self.up(t4), p3], 1))  # (B, c[2], H/8, W/8)
        n4 = self.bottom_up4(torch.cat([self.down3(n3), t4], 1))  # (B, c[3], H/16, W/16)
        n5 = self.bottom_up5(torch.cat([self.down4(n4), p5], 1))  # (B, c[4], H/32, W/32)
        return n3, n4, n5


class Head(nn.Module):
    """Decoupled head: per level, a box branch (4 * REG_MAX distance logits) and a class branch (num_classes logits).

    Returns per level (B, 4 * REG_MAX + num_classes, h, w)."""

    def __init__(self, channels: tuple[int, ...], num_classes: int, image_size: int) -> None:
        super().__init__()
        c_box, c_cls = max(16, channels[0] // 4, 4 * REG_MAX), max(channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(nn.Sequential(Conv(c, c_box, 3), Conv(c_box, c_box, 3),
                                               nn.Conv2d(c_box, 4 * REG_MAX, 1)) for c in channels)
        self.cls = nn.ModuleList(nn.Sequential(Conv(c, c_cls, 3), Conv(c_cls, c_cls, 3),
                                               nn.Conv2d(c_cls, num_classes, 1)) for c in channels)
        for box, cls, stride in zip(self.box, self.cls, STRIDES, strict=True):
            nn.init.constant_(box[-1].bias, 1.0)  # uniform distance distributions: boxes start large
            # prior: about 5 objects per image spread over the classes and the level's (image_size / stride)^2 cells,
            # so the many negatives do not swamp the class loss at the start.
            nn.init.constant_(cls[-1].bias, math.log(5 / num_classes / (image_size / stride) ** 2))

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [torch.cat([box(x), cls(x)], 1) for x, box, cls in zip(feats, self.box, self.cls, strict=True)]


def make_anchors(shapes: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points (cell centres, xy pixels) (A, 2) and their strides (A, 1), level by level, row-major."""
    points, stride_list = [], []
    for (h, w), s in zip(shapes, strides, strict=True):
        y, x = torch.meshgrid(torch.arange(h, device=device) + 0.5, torch.arange(w, device=device) + 0.5,
                              indexing="ij")
        points.append(torch.stack([x, y], -1).reshape(-1, 2) * s)  # (h * w, 2)
        stride_list.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(points), torch.cat(stride_list)


def decode_boxes(dist_logits: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Distance-distribution logits (..., A, 4 * REG_MAX) -> xyxy pixel boxes (..., A, 4).

    Each side's distance is the expectation of its softmax distribution over 0..REG_MAX-1 strides."""
    bins = torch.arange(REG_MAX, device=dist_logits.device, dtype=dist_logits.dtype)
    ltrb = dist_logits.unflatten(-1, (4, REG_MAX)).softmax(-1) @ bins * strides  # (..., A, 4) pixels
    return torch.cat([anchors - ltrb[..., :2], anchors + ltrb[..., 2:]], -1)


def box_to_distances(anchors: torch.Tensor, boxes: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """The inverse of `decode_boxes`' geometry: xyxy boxes (P, 4) -> ltrb distances in strides from anchors (P, 4)."""
    return torch.cat([anchors - boxes[:, :2], boxes[:, 2:] - anchors], -1) / strides


def dfl_loss(dist_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: cross-entropy to the two bins around each target distance, weighted by proximity.

    dist_logits (P, 4, REG_MAX), target (P, 4) in [0, REG_MAX - 1) -> (P,)."""
    left = target.long()  # (P, 4)
    w_right = target - left
    logits = dist_logits.transpose(1, 2)  # (P, REG_MAX, 4): cross_entropy wants the classes second
    ce_left = F.cross_entropy(logits, left, reduction="none")
    ce_right = F.cross_entropy(logits, left + 1, reduction="none")
    return (ce_left * (1 - w_right) + ce_right * w_right).mean(-1)


class TaskAlignedAssigner:
    """TOOD's task-aligned label assignment for one image (`__call__` takes no batch dimension)."""

    def __init__(self, topk: int = TOPK, alpha: float = ALPHA, beta: float = BETA) -> None:
        self.topk, self.alpha, self.beta = topk, alpha, beta

    @torch.no_grad()
    def __call__(self, scores: torch.Tensor, pred_boxes: torch.Tensor, anchors: torch.Tensor, gt_boxes: torch.Tensor,
                 gt_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """scores (A, C) probabilities, pred_boxes (A, 4), anchors (A, 2), gt_boxes (n, 4), gt_labels (n,) ->
        target boxes (A, 4), soft class targets (A, C) (zero rows for background), positive mask (n, A) with at most
        one GT per anchor."""
        num_anchors, num_classes = scores.shape
        if len(gt_boxes) == 0:
            return (torch.zeros_like(pred_boxes), torch.zeros_like(scores),
                    torch.zeros(0, num_anchors, dtype=torch.bool, device=scores.device))
        # candidates: anchor centres strictly inside the GT box. A side shorter than the smallest stride may hold no
        # anchor centre, so for this inside-test only it counts as one stride-16 cell (Ultralytics' small-target STAL).
        centre, size = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2, gt_boxes[:, 2:] - gt_boxes[:, :2]  # (n, 2) each
        size = torch.where(size < STRIDES[0], float(STRIDES[1]), size)
        lo, hi = centre - size / 2, centre + size / 2  # (n, 2) each
        inside = ((anchors > lo[:, None]) & (anchors < hi[:, None])).all(-1)  # (n, A)
        from torchvision.ops import box_iou  # torchvision takes seconds to import: only when training

        iou = box_iou(gt_boxes, pred_boxes) * inside  # (n, A)
        metric = scores[:, gt_labels].T.pow(self.alpha) * iou.pow(self.beta)  # (n, A) alignment metric
        # top-k per GT; anchors outside the box rank below every inside one (-1), then are dropped
        top = metric.masked_fill(~inside, -1).topk(min(self.topk, num_anchors), dim=1).indices  # (n, k)
        candidate = torch.zeros_like(inside).scatter_(1, top, True) & inside  # (n, A)
        # an anchor that is a candidate of several GTs goes to the one its predicted box overlaps most
        gt_index = iou.masked_fill(~candidate, -1).argmax(0)  # (A,)
        positive = candidate & (gt_index == torch.arange(len(gt_boxes), device=iou.device)[:, None])  # (n, A)
        # soft targets: per GT, the metric rescaled so its best positive anchor gets the best positive IoU
        metric = metric * positive
        best_iou = (iou * positive).amax(1, keepdim=True)  # (n, 1)
        norm = (metric * best_iou / (metric.amax(1, keepdim=True) + 1e-12)).amax(0)  # (A,) zero for background
        target_scores = F.one_hot(gt_labels[gt_index], num_classes).to(scores.dtype) * norm[:, None]  # (A, C)
        return gt_boxes[gt_index], target_scores, positive


class YOLODetector(nn.Module):
    """Backbone -> PAN-FPN neck -> decoupled head, with the task-aligned loss and NMS post-processing.

    train: `model(images, targets)` -> {"loss_box", "loss_cls", "loss_dfl"} (scalars, already weighted);
    eval: `model(images)` -> per image {"boxes" (m, 4), "scores" (m,), "labels" (m,)}, sorted by score."""

    def __init__(self, num_classes: int, image_size: int, depth: float, width: float, max_channels: int) -> None:
        super().__init__()
        c = tuple(max(8, round(min(x, max_channels) * width / 8) * 8) for x in CHANNELS)  # multiples of 8
        n = tuple(max(round(x * depth), 1) for x in REPEATS)
        self.backbone = Backbone(c, n)
        self.neck = PANFPN(c, n[4])
        self.head = Head(c[2:], num_classes, image_size)
        self.assigner = TaskAlignedAssigner()
        self.num_classes, self.strides = num_classes, STRIDES
        self.score_thresh, self.nms_thresh, self.max_det = SCORE_THRESH, NMS_THRESH, MAX_DET
        self.class_specific = tuple(f"head.cls.{i}.2." for i in range(len(STRIDES)))  # renewed for other labels

    def _predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) -> distance logits (B, A, 4 * REG_MAX), class logits (B, A, C) (both float32),
        anchor points (A, 2) and strides (A, 1), with A = sum over levels of (H / s) * (W / s)."""
        height, width = images.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"YOLO input height and width must be multiples of 32, got {height}x{width}")
        feats = self.head(self.neck(*self.backbone(images)))  # 3 x (B, 4 * REG_MAX + C, H / s, W / s)
        anchors, strides = make_anchors([f.shape[-2:] for f in feats], STRIDES, images.device)
        out = torch.cat([f.flatten(2) for f in feats], 2).transpose(1, 2).float()  # (B, A, 4 * REG_MAX + C)
        dist, logits = out.split((4 * REG_MAX, self.num_classes), -1)
        return dist, logits, anchors, strides

    def forward_raw(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, A, 4 + C): xyxy pixel boxes (clipped to the image) and class probabilities."""
        from torchvision.ops import clip_boxes_to_image

        dist, logits, anchors, strides = self._predict(images)
        boxes = clip_boxes_to_image(decode_boxes(dist, anchors, strides), images.shape[-2:])  # (B, A, 4)
        return torch.cat([boxes, logits.sigmoid()], -1)

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None
                ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("YOLODetector needs targets in training mode")
            return self.loss(*self._predict(images), targets)
        return [self.postprocess(raw) for raw in self.forward_raw(images)]

    def postprocess(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """One image's raw output (A, 4 + C) -> its candidates (see `candidates`), at this model's thresholds."""
        return candidates(raw, self.score_thresh, self.nms_thresh, self.max_det)

    def raw_graph(self) -> nn.Module:
        """The tensor-in, tensor-out part of inference, box decoding included: what export writes."""
        return RawOutputs(self)

    def loss(self, dist: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor,
             targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The `_predict` outputs and the targets -> weighted scalar losses (float32)."""
        from torchvision.ops import complete_box_iou_loss

        pred_boxes = decode_boxes(dist, anchors, strides)  # (B, A, 4) pixels
        scores = logits.detach().sigmoid()
        assigned = [self.assigner(scores[i], pred_boxes[i].detach(), anchors, t["boxes"].float(), t["labels"])
                    for i, t in enumerate(targets)]
        target_boxes = torch.stack([a[0] for a in assigned])  # (B, A, 4)
        target_scores = torch.stack([a[1] for a in assigned])  # (B, A, C)
        fg = torch.stack([a[2].any(0) for a in assigned])  # (B, A) positive anchors
        # Normalise by the batch's total soft-target mass (proportional to its number of objects), not by the batch
        # size: each loss is a mean per object, so its scale does not depend on the batch size, and the gradients
        # suit AdamW at lr ~1e-3 with the usual grad clipping. (YOLOv8 multiplies this by the batch size, to suit
        # its SGD at lr 0.01 with a nominal batch of 64; with Adam the overall scale only matters for clipping.)
        total = target_scores.sum().clamp(min=1)
        loss_cls = F.binary_cross_entropy_with_logits(logits, target_scores, reduction="sum") / total
        weight = target_scores.sum(-1)[fg]  # (P,) soft target of each positive anchor
        loss_box = (complete_box_iou_loss(pred_boxes[fg], target_boxes[fg], reduction="none") * weight).sum() / total
        anchor_fg, stride_fg = anchors.expand_as(pred_boxes[..., :2])[fg], strides.expand_as(fg[..., None])[fg]
        target_dist = box_to_distances(anchor_fg, target_boxes[fg], stride_fg).clamp(0, REG_MAX - 1.01)  # (P, 4)
        loss_dfl = (dfl_loss(dist[fg].unflatten(-1, (4, REG_MAX)), target_dist) * weight).sum() / total
        return {"loss_box": GAIN_BOX * loss_box, "loss_cls": GAIN_CLS * loss_cls, "loss_dfl": GAIN_DFL * loss_dfl}


class RawOutputs(nn.Module):
    """A detector's `forward_raw` as a module of its own: images (B, 3, H, W) -> (B, A, 4 + C) boxes and class
    probabilities. It shares the detector's weights; NMS stays outside (data-dependent, done in torch)."""

    def __init__(self, detector: YOLODetector) -> None:
        super().__init__()
        self.detector = detector
        self.train(detector.training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.detector.forward_raw(images)


def candidates(raw: torch.Tensor, score_thresh: float = SCORE_THRESH, nms_thresh: float = NMS_THRESH,
               max_det: int = MAX_DET) -> dict[str, torch.Tensor]:
    """One image's raw output (A, 4 + C) -> candidates: every (box, class) with score >= score_thresh (a box may
    carry several classes), the best MAX_CANDIDATES, class-wise NMS, at most max_det, sorted by score."""
    from torchvision.ops import batched_nms

    boxes, probs = raw[:, :4], raw[:, 4:]  # (A, 4), (A, C)
    anchor, label = (probs >= score_thresh).nonzero(as_tuple=True)  # (K,), (K,)
    score = probs[anchor, label]
    if len(score) > MAX_CANDIDATES:
        score, best = score.topk(MAX_CANDIDATES)
        anchor, label = anchor[best], label[best]
    keep = batched_nms(boxes[anchor], score, label, nms_thresh)[:max_det]  # by decreasing score
    return {"boxes": boxes[anchor[keep]], "scores": score[keep], "labels": label[keep]}


def _build(name: str, num_classes: int, image_size: int, library_weights: bool, depth: float | None,
           width: float | None) -> YOLODetector:
    if library_weights:
        raise DlforgeError(f"{name} has no library weights; use model.pretrained: <run dir or .safetensors>")
    size_depth, size_width, max_channels = SIZES[name]
    return YOLODetector(num_classes, image_size, size_depth if depth is None else depth,
                        size_width if width is None else width, max_channels)


@DETECTORS.register("yolo_n")
def yolo_n(num_classes: int, image_size: int, library_weights: bool = False, depth: float | None = None,
           width: float | None = None) -> YOLODetector:
    """YOLOv8-n-like detector written here (depth 0.33, width 0.25); `depth`/`width` override the multiples."""
    return _build("yolo_n", num_classes, image_size, library_weights, depth, width)


@DETECTORS.register("yolo_s")
def yolo_s(num_classes: int, image_size: int, library_weights: bool = False, depth: float | None = None,
           width: float | None = None) -> YOLODetector:
    """YOLOv8-s-like detector written here (depth 0.33, width 0.50); `depth`/`width` override the multiples."""
    return _build("yolo_s", num_classes, image_size, library_weights, depth, width)
