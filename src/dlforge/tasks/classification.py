"""What every classification task shares: loss, metrics, postprocessing, evaluation, report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dlforge.devices import to_device
from dlforge.errors import DlforgeError
from dlforge.pages import Section, figure, table
from dlforge.tasks.base import Task, significant
from dlforge.tasks.capabilities import Auditable, Explainable, ExplainTarget, Exportable, Profiled, Reported

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

    from dlforge.run import Run
    from dlforge.tasks.base import Inference

CALIBRATION_BINS = 15
# The temperature is kept within [0.01, 100]: a validation set the model separates perfectly drives the log loss's
# minimum towards T = 0 (every confidence 1), which no test set bears out.
LOG_T_RANGE = (math.log(0.01), math.log(100.0))


class ClassificationTask(Task, Exportable, Explainable, Profiled, Auditable, Reported):
    default_monitor = "val/accuracy"
    graph_outputs = ("logits",)  # (B, K)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # outputs: (B, K) logits, targets: (B,). With train.label_smoothing a, the cross-entropy against
        # (1 - a)·one-hot + a/K (Müller et al. 2019: smoother targets, less over-confident predictions).
        return F.cross_entropy(outputs, targets, label_smoothing=self.spec.train.label_smoothing)

    def metrics(self, meta: dict[str, Any]) -> MetricCollection:
        from torchmetrics import MetricCollection  # imports scipy and matplotlib: only when training
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        k = len(meta["classes"])
        return MetricCollection({"accuracy": MulticlassAccuracy(k, average="micro"),
                                 "f1_macro": MulticlassF1Score(k, average="macro")})

    def calibrate(self, model: nn.Module, val: Dataset, meta: dict[str, Any]) -> dict[str, Any]:
        """Temperature scaling (Guo et al. 2017): one T > 0 that divides every logit, fit on the validation set
        by log loss. The ranking (and accuracy) stay; confidences come to mean what they say, so their mean
        estimates accuracy on unlabelled data (drift monitoring)."""
        if len(val) < 10:
            return {"temperature": 1.0}
        device = next(model.parameters()).device
        loader = DataLoader(val, batch_size=256, collate_fn=getattr(val, "collate", None))
        model.eval()
        with torch.no_grad():
            pairs = [self.step(model, to_device(batch, device))[1:] for batch in loader]
        logits = torch.cat([o for o, _ in pairs]).float().cpu()  # (N, K)
        targets = torch.cat([t for _, t in pairs]).cpu()  # (N,)
        log_t = torch.zeros((), requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits / log_t.clamp(*LOG_T_RANGE).exp(), targets)
            loss.backward()
            return loss

        optimizer.step(closure)
        return {"temperature": round(log_t.clamp(*LOG_T_RANGE).exp().item(), 6)}

    def probabilities(self, outputs: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
        """(B, K) logits -> calibrated class probabilities."""
        return (outputs.float() / meta.get("temperature", 1.0)).softmax(dim=-1)

    def postprocess(self, outputs: torch.Tensor, meta: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
        classes = meta["classes"]
        probs = self.probabilities(outputs, meta)  # (B, K)
        return [{"label": classes[int(p.argmax())], "confidence": significant(float(p.max())),
                 "probabilities": {c: significant(float(q)) for c, q in zip(classes, p, strict=True)}}
                for p in probs]

    def explain_target(self, outputs: torch.Tensor, meta: dict[str, Any], target: str | None = None,
                       box: int | None = None, **options: Any) -> ExplainTarget:
        """The log-odds of a class (`target`, or the predicted one): its logit less the log-sum-exp of the others'.
        Unlike the probability it does not saturate, and unlike the bare logit it moves only with the decision."""
        classes = meta["classes"]
        if box is not None:
            raise DlforgeError("box: picks a detected object; this model classifies (use target: a class)")
        if target is not None and str(target) not in classes:
            raise DlforgeError(f"target {target!r} is not a class of this model; classes: {', '.join(classes)}")
        k = int(outputs[0].argmax()) if target is None else classes.index(str(target))
        others = [j for j in range(len(classes)) if j != k]
        return ExplainTarget({"class": classes[k], "score": "log-odds"},
                             lambda out: out[:, k].float() - out[:, others].float().logsumexp(dim=1))

    def evaluate(self, predictor: Inference, items: Sequence[Any], targets: Any, plots_dir: Path) -> dict[str, Any]:
        classes = predictor.meta["classes"]
        logits = predictor.outputs(items)  # (N, K)
        probs = self.probabilities(logits, predictor.meta)  # (N, K), temperature-scaled
        from dlforge import plots  # matplotlib: only when drawing

        targets_t = torch.as_tensor(targets)
        result = classification_metrics(probs, targets_t, classes)
        # The same predictions before temperature scaling (T = 1): what scaling changed. Accuracy cannot change.
        raw = classification_metrics(logits.float().softmax(dim=-1), targets_t, classes)
        result["calibration"] = {"temperature": predictor.meta.get("temperature", 1.0), "bins": CALIBRATION_BINS,
                                 "before": calibration_summary(raw), "after": calibration_summary(result)}
        plots_dir.mkdir(parents=True, exist_ok=True)
        plots.confusion_matrix(np.array(result["confusion_matrix"]), classes, plots_dir / "confusion_matrix.png")
        plots.reliability_before_after(result["calibration"], plots_dir / "reliability.png")
        self.plot_examples(items, np.asarray(targets), probs.numpy(), classes, plots_dir / "examples.png")
        return result

    def plot_examples(self, items: Sequence[Any], targets: np.ndarray, probs: np.ndarray, classes: list[str],
                      path: Path) -> None:
        """A picture of test examples with predicted and true labels; tasks with inputs worth showing."""

    def report_sections(self, run: Run) -> list[Section]:
        ev = run.read_eval()
        if ev is None:
            return []
        m = ev["metrics"]
        summary = table(["metric", "value"], [[k, f"{m[k]:.4f}"] for k in
                                              ("accuracy", "f1_macro", "ece", "log_loss")])
        per_class = table(["class", "precision", "recall", "f1", "support"],
                          [[c["class"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}",
                            c["support"]] for c in ev["per_class"]])
        cal = ev.get("calibration")  # evaluations written before it existed have none
        reliability = "Reliability diagram: confidence against accuracy" + (
            f", before and after temperature scaling (T = {cal['temperature']:.3g})" if cal else "")
        pics = [figure(run.path / "plots" / name, caption) for name, caption in (
            ("confusion_matrix.png", "Confusion matrix (rows: true, columns: predicted)"),
            ("reliability.png", reliability),
            ("examples.png", "Test examples, errors first (red: wrong)"))]
        calibration = "" if cal is None else table(
            ["", "ECE", "log loss", "mean confidence"],
            [[f"{when} temperature scaling", f"{cal[when]['ece']:.4f}", f"{cal[when]['log_loss']:.4f}",
              f"{cal[when]['mean_confidence']:.4f}"] for when in ("before", "after")])
        sections = [Section("Evaluation", f"<p>On {ev['n']} examples ({ev['data']}).</p>" + summary + per_class
                            + calibration + "".join(pics))]
        return sections


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion matrix, ECE, log loss (torchmetrics)."""
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_calibration_error,
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    k = len(classes)
    kw = {"num_classes": k}
    precision = multiclass_precision(probs, targets, average=None, **kw)
    recall = multiclass_recall(probs, targets, average=None, **kw)
    f1 = multiclass_f1_score(probs, targets, average=None, **kw)
    support = torch.bincount(targets, minlength=k)
    confidence, predicted = probs.max(dim=1)
    accuracy = float(multiclass_accuracy(probs, targets, average="micro", **kw))
    return {
        "n": len(targets),
        "metrics": {
            "accuracy": accuracy,
            "f1_macro": float(multiclass_f1_score(probs, targets, average="macro", **kw)),
            "ece": float(multiclass_calibration_error(probs, targets, n_bins=CALIBRATION_BINS, norm="l1", **kw)),
            "log_loss": float(F.nll_loss(probs.clamp_min(1e-12).log(), targets)),
        },
        "per_class": [{"class": c, "precision": float(precision[i]), "recall": float(recall[i]),
                       "f1": float(f1[i]), "support": int(support[i])} for i, c in enumerate(classes)],
        "confusion_matrix": multiclass_confusion_matrix(probs, targets, **kw).tolist(),
        "reliability": reliability_bins(confidence, predicted == targets),
        "headline": {"name": "accuracy", "value": accuracy},
    }


def calibration_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Calibration as `classification_metrics` measured it: ECE, log loss, accuracy, mean confidence, the bins."""
    bins = result["reliability"]
    confidence = sum(b["confidence"] * b["n"] for b in bins if b["n"]) / max(sum(b["n"] for b in bins), 1)
    return {"ece": result["metrics"]["ece"], "log_loss": result["metrics"]["log_loss"],
            "accuracy": result["metrics"]["accuracy"], "mean_confidence": confidence, "reliability": bins}


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = CALIBRATION_BINS) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram's points)."""
    edges = torch.linspace(0, 1, n_bins + 1)
    which = torch.bucketize(confidence, edges[1:-1], right=True)  # (N,) bin index, same bins as torchmetrics
    rows = []
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                     "confidence": float(confidence[mask].mean()) if n else None,
                     "accuracy": float(correct[mask].float().mean()) if n else None})
    return rows
