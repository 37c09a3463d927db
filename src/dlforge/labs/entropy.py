"""Entropy, cross-entropy and calibration: the identities on real predictions, temperature scaling (Guo et al.
2017) and label smoothing (Müller et al. 2019), through dlforge's own classification tasks.

For a label distribution p and predicted probabilities q = softmax(z) over K classes:

    H(p)      = −Σ p log p                  entropy of the labels (0 for a one-hot label)
    KL(p‖q)   =  Σ p log(p/q)               how far the prediction is from the labels (≥ 0)
    CE(p, q)  = −Σ p log q = H(p) + KL(p‖q) what a classifier is trained to minimise

With one-hot labels CE is the negative log-likelihood −log q_y; with `train.label_smoothing` α the labels are
(1 − α)·onehot + α/K, H(p) > 0, and the loss cannot reach 0. The lab measures the identity per example on
real test predictions (torch.distributions for H and KL, scipy.stats.entropy as an independent KL,
F.cross_entropy with probability targets for CE) and checks that each task's own training loss equals the mean
H(p_α) + KL(p_α‖q).

Calibration: a classifier is calibrated when, among predictions made with confidence c, a share c is right. The
expected calibration error (ECE, Guo et al.'s 15 equal-width confidence bins) is the bin-size-weighted mean
|accuracy − confidence|. Guo et al. found modern networks over-confident, and that one temperature T dividing
every logit, fitted on the validation set's NLL, fixes most of it without changing any prediction (the ranking
is unchanged). The lab trains two over-confident classifiers, long, without weight decay, keeping the last
(lowest training loss) weights:

* `builtin:digits` as a table of 64 pixel columns (`task: tabular_classification`, written to data/digits.csv):
  an MLP 64 → 256 → 256 → 10 without normalisation or dropout, on a small training split (20%) so that the
  test errors are numerous enough for the ECE to measure something at ~95% accuracy;
* Rotten Tomatoes (`builtin:rotten_tomatoes`, `task: text_classification`): the transformer encoder written
  here, from scratch, which memorises its 2,900 training sentences within a few epochs.

Each is trained at label smoothing α ∈ {0, 0.05, 0.1}; the temperature is the one `dlforge train` fits
(`ClassificationTask.calibrate`), and the ECE is torchmetrics' (`classification_metrics`), before and after.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dlforge.devices import torch_threads
from dlforge.registry import LABS

log = logging.getLogger("dlforge")

IDENTITY_TOLERANCE = 1e-12  # float64, per example
# Guo et al. 2017, Table 1: ECE (%, 15 bins) uncalibrated -> temperature scaling.
GUO = [("CIFAR-100, ResNet-110", 16.53, 1.26), ("CIFAR-10, ResNet-110", 4.6, 0.83),
       ("SST binary (Rotten Tomatoes sentences), TreeLSTM", 6.63, 1.84)]
NAMES = {"digits": "digits (tabular MLP)", "rotten_tomatoes": "Rotten Tomatoes (transformer)"}


# ---------------------------------------------------------------- the identities


def smoothed(targets: torch.Tensor, k: int, alpha: float) -> torch.Tensor:
    """(N,) class indices -> (N, K) label distributions (1 − α)·onehot + α/K."""
    return (1 - alpha) * F.one_hot(targets, k).double() + alpha / k


def identities(logits: torch.Tensor, targets: torch.Tensor, alpha: float) -> dict[str, Any]:
    """CE = H + KL per example, in float64, for labels smoothed by α (0: one-hot), three ways."""
    from scipy.stats import entropy as scipy_entropy
    from torch.distributions import Categorical, kl_divergence

    z = logits.double()  # (N, K)
    p = smoothed(targets, z.shape[1], alpha)  # (N, K)
    labels, predicted = Categorical(probs=p), Categorical(logits=z)
    h = labels.entropy()  # (N,)
    kl = kl_divergence(labels, predicted)  # (N,)
    ce = F.cross_entropy(z, p, reduction="none")  # (N,), probability targets
    kl_scipy = torch.as_tensor(scipy_entropy(p.numpy(), z.softmax(dim=1).numpy(), axis=1))  # Σ p log(p/q)
    nll = F.nll_loss(z.log_softmax(dim=1), targets, reduction="none")  # −log q_y
    return {"alpha": alpha, "n": len(targets), "mean_entropy": float(h.mean()), "mean_kl": float(kl.mean()),
            "mean_cross_entropy": float(ce.mean()),
            "max_abs_ce_minus_h_plus_kl": float((ce - (h + kl)).abs().max()),
            "max_abs_kl_torch_minus_scipy": float((kl - kl_scipy).abs().max()),
            "max_abs_ce_minus_nll": float((ce - nll).abs().max()) if alpha == 0 else None}


def task_loss_identity(spec: Any, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The task's own training loss (with the spec's label smoothing) against the mean H(p_α) + KL(p_α‖q)."""
    from dlforge.registry import TASKS

    alpha = spec.train.label_smoothing
    loss = float(TASKS.get(spec.task)(spec).loss(logits.double(), targets))
    measured = identities(logits, targets, alpha)
    expected = measured["mean_entropy"] + measured["mean_kl"]
    return {"alpha": alpha, "task_loss": loss, "mean_h_plus_kl": expected, "abs_difference": abs(loss - expected)}


# ---------------------------------------------------------------- the classifiers


def write_digits_table(path: Path) -> Path:
    """builtin:digits as a CSV: 64 pixel columns p0…p63 (0–255) and the label column `digit`."""
    import pandas as pd

    import dlforge.data.images  # noqa: F401  (registers builtin:digits)
    from dlforge.registry import DATASETS

    images = DATASETS.get("digits")()
    pixels = np.asarray(images.images).reshape(len(images.targets), -1)  # (1797, 64) uint8
    frame = pd.DataFrame(pixels, columns=[f"p{i}" for i in range(pixels.shape[1])])
    frame["digit"] = [images.classes[t] for t in images.targets]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def spec_for(source: str, alpha: float, config: dict[str, Any], seed: int, table: Path) -> Any:
    """The spec of one over-confident classifier: trained long, no weight decay, the last weights kept."""
    import dlforge.tasks  # noqa: F401  (registers the tasks)
    from dlforge.spec import validate_spec

    c = config[source]
    train = {"epochs": c["epochs"], "batch_size": 64, "seed": seed, "scheduler": "none", "checkpoint": False,
             "label_smoothing": alpha, "optimizer": {"name": "adamw", "lr": c["lr"], "weight_decay": 0.0},
             "monitor": {"metric": "train/loss", "mode": "min"}}  # the over-trained weights, not the best val epoch
    if source == "digits":
        return validate_spec({"name": f"entropy-digits-a{alpha:g}", "task": "tabular_classification", "train": train,
                              "data": {"source": str(table), "label": "digit", "split": c["split"]},
                              "model": {"name": "mlp", "kwargs": {"hidden": c["hidden"], "dropout": 0.0,
                                                                  "norm": "none"}}})
    return validate_spec({"name": f"entropy-rt-a{alpha:g}", "task": "text_classification", "train": train,
                          "data": {"source": "builtin:rotten_tomatoes", "max_length": c["max_length"],
                                   "split": c["split"]},
                          "model": {"name": "transformer", "kwargs": {"d_model": c["d_model"], "heads": 2,
                                                                      "layers": 1, "dropout": 0.1}}})


def calibration_run(source: str, alpha: float, config: dict[str, Any], seed: int, table: Path) -> dict[str, Any]:
    """Train one classifier; its test split's calibration before and after temperature scaling, and the
    identities on its predictions."""
    from dlforge.labs._training import fit
    from dlforge.tasks.classification import calibration_summary, classification_metrics

    spec = spec_for(source, alpha, config, seed, table)
    fitted = fit(spec)
    classes, t = fitted.meta["classes"], torch.as_tensor(fitted.targets)
    temperature = fitted.meta["temperature"]
    before = calibration_summary(classification_metrics(fitted.logits.softmax(dim=1), t, classes))
    after = calibration_summary(classification_metrics((fitted.logits / temperature).softmax(dim=1), t, classes))
    log.info("entropy: %s, α = %g: accuracy %.4f, T %.3f, ECE %.4f -> %.4f (%.0f s)", source, alpha,
             fitted.accuracy, temperature, before["ece"], after["ece"], fitted.seconds)
    same = bool((fitted.logits.argmax(1) == (fitted.logits / temperature).argmax(1)).all())
    return {"source": source, "alpha": alpha, "task": spec.task, "accuracy": fitted.accuracy,
            "temperature": temperature, "before": before, "after": after, "predictions_unchanged": same,
            "epochs": len(fitted.history), "train_loss": [row["train/loss"] for row in fitted.history],
            "val_loss": [row.get("val/loss") for row in fitted.history], "train_time_s": round(fitted.seconds, 1),
            "n_test": len(t), "sizes": fitted.meta.get("sizes"),
            "identities": [identities(fitted.logits, t, a) for a in (0.0, 0.1)],
            "task_loss": task_loss_identity(spec, fitted.logits, t)}


# ---------------------------------------------------------------- the lab


@LABS.register("entropy")
def entropy(out: Path, quick: bool = False, seed: int = 0) -> tuple[dict[str, Any], str]:
    """Cross-entropy = entropy + KL on real predictions; over-confident classifiers on digits and Rotten Tomatoes, ECE before/after temperature scaling (Guo et al. 2017); label smoothing 0/0.05/0.1 (Müller et al. 2019)."""  # noqa: E501
    config: dict[str, Any] = {
        "seed": seed, "alphas": [0.0, 0.05, 0.1], "bins": 15,
        "digits": {"epochs": 100, "lr": 3e-3, "hidden": [256, 256], "split": {"val": 0.2, "test": 0.6, "seed": 0},
                   "alphas": [0.0, 0.05, 0.1]},
        "rotten_tomatoes": {"epochs": 10, "lr": 1e-3, "d_model": 64, "max_length": 48,
                            "split": {"val": 0.15, "test": 0.25, "seed": 0}, "alphas": [0.0, 0.05, 0.1]}}
    if quick:  # digits at every α; Rotten Tomatoes unsmoothed only, smaller and shorter
        config["digits"].update(epochs=60)
        config["rotten_tomatoes"].update(epochs=4, lr=2e-3, d_model=32, max_length=32, alphas=[0.0])
    with torch_threads(1):  # small models: a second thread only waits on the first (see vanishing-gradients)
        return _experiment(config, Path(out))


def _experiment(config: dict[str, Any], out: Path) -> tuple[dict[str, Any], str]:
    from dlforge import plots

    table = write_digits_table(out / "data" / "digits.csv")
    runs = [calibration_run(source, alpha, config, config["seed"], table)
            for source in ("digits", "rotten_tomatoes") for alpha in config[source]["alphas"]]
    files = []
    for source in ("digits", "rotten_tomatoes"):
        r = _run(runs, source, 0.0)
        name = f"reliability_{source}.png"
        plots.reliability_before_after({"temperature": r["temperature"], "before": r["before"], "after": r["after"]},
                                       out / name)
        files.append(name)
    _plot_smoothing(runs, out / "label_smoothing.png")
    worst = max(max(i["max_abs_ce_minus_h_plus_kl"], i["max_abs_kl_torch_minus_scipy"], i["max_abs_ce_minus_nll"] or 0)
                for r in runs for i in r["identities"])
    worst_task = max(r["task_loss"]["abs_difference"] for r in runs)
    headline: dict[str, Any] = {"max |CE − (H + KL)|, per example": worst, "max |task loss − mean(H + KL)|": worst_task}
    for r in runs:
        headline[f"{r['source']} α={r['alpha']:g}: ECE before → after (T)"] = (
            f"{r['before']['ece']:.4f} → {r['after']['ece']:.4f} ({r['temperature']:.2f})")
    results = {"config": config, "runs": runs, "max_identity_error": worst, "max_task_loss_error": worst_task,
               "guo_2017_table_1": [{"setting": s, "ece_uncalibrated": a, "ece_temperature_scaled": b}
                                    for s, a, b in GUO],
               "headline": headline, "files": [*files, "label_smoothing.png", "data/digits.csv", "summary.md",
                                                 "results.json"]}
    return results, _summary(results)


def _run(runs: list[dict[str, Any]], source: str, alpha: float) -> dict[str, Any]:
    return next(r for r in runs if r["source"] == source and r["alpha"] == alpha)


# ---------------------------------------------------------------- figures and summary


def _plot_smoothing(runs: list[dict[str, Any]], path: Path) -> None:
    """Per source and α: ECE before and after temperature scaling; mean confidence against accuracy."""
    from dlforge.plots import plt, save

    sources = [s for s in ("digits", "rotten_tomatoes") if any(r["source"] == s for r in runs)]
    fig, axes = plt.subplots(1, len(sources), figsize=(5.5 * len(sources), 3.8), squeeze=False)
    for ax, source in zip(axes[0], sources, strict=True):
        rows = [r for r in runs if r["source"] == source]
        x = np.arange(len(rows))
        ax.bar(x - 0.3, [r["before"]["ece"] for r in rows], 0.2, label="ECE before scaling")
        ax.bar(x - 0.1, [r["after"]["ece"] for r in rows], 0.2, label="ECE after scaling")
        ax.bar(x + 0.1, [r["before"]["mean_confidence"] for r in rows], 0.2, label="mean confidence (T = 1)")
        ax.bar(x + 0.3, [r["accuracy"] for r in rows], 0.2, label="accuracy")
        ax.set_xticks(x, [f"α = {r['alpha']:g}\nT = {r['temperature']:.2f}" for r in rows])
        ax.set_title(NAMES[source])
        ax.legend(fontsize=7)
    save(fig, path)


def _summary(results: dict[str, Any]) -> str:
    c, runs = results["config"], results["runs"]
    lines = ["# Entropy, cross-entropy and calibration", "",
             "## CE = H + KL, on real predictions", "",
             "Per test example, in float64, from each classifier's logits (one-hot labels, and labels smoothed "
             "with α = 0.1):", "",
             "| classifier | labels | mean H(p) | mean KL(p‖q) | mean CE | max \\|CE − (H + KL)\\| | "
             "max \\|KL − scipy\\| | max \\|CE − NLL\\| |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for i in r["identities"]:
            nll = "—" if i["max_abs_ce_minus_nll"] is None else f"{i['max_abs_ce_minus_nll']:.1e}"
            labels = "one-hot" if i["alpha"] == 0 else f"smoothed, α = {i['alpha']:g}"
            lines.append(f"| {r['source']}, trained at α = {r['alpha']:g} | {labels} | "
                         f"{i['mean_entropy']:.4f} | {i['mean_kl']:.4f} | {i['mean_cross_entropy']:.4f} | "
                         f"{i['max_abs_ce_minus_h_plus_kl']:.1e} | {i['max_abs_kl_torch_minus_scipy']:.1e} | {nll} |")
    lines += ["", "What each classifier minimised is that cross-entropy: its task's own loss "
              "(`ClassificationTask.loss`, with the spec's `train.label_smoothing`) on the test logits against the "
              "mean H(p_α) + KL(p_α‖q): max difference " + f"{results['max_task_loss_error']:.1e}.", "",
              "## Temperature scaling (Guo et al. 2017)", "",
              "ECE (%, 15 bins) before → after temperature scaling, Guo et al.'s Table 1 beside ours (α = 0):", "",
              "| setting | accuracy | T | ECE uncalibrated | ECE temperature-scaled |", "|---|---|---|---|---|"]
    lines += [f"| Guo et al.: {s} | | | {a:.2f} | {b:.2f} |" for s, a, b in GUO]
    for source in ("digits", "rotten_tomatoes"):
        r = _run(runs, source, 0.0)
        lines.append(f"| ours: {NAMES[source]} | {r['accuracy']:.4f} | {r['temperature']:.2f} | "
                     f"{100 * r['before']['ece']:.2f} | {100 * r['after']['ece']:.2f} |")
    lines += ["", "T > 1 means the raw logits were over-confident. Scaling changes no prediction: "
              + ", ".join(f"{r['source']} α={r['alpha']:g} {'unchanged' if r['predictions_unchanged'] else 'CHANGED'}"
                          for r in runs) + ".", "",
              "## Label smoothing (Müller et al. 2019)", "",
              "Müller et al. (Fig. 2, ResNet-56 on CIFAR-100) found a network trained with α = 0.05 about as well "
              "calibrated as the unsmoothed one after temperature scaling. Ours, on the same test splits:", "",
              "| classifier | α | accuracy | mean confidence | ECE (T = 1) | T | ECE after scaling | "
              "NLL before → after |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {NAMES[r['source']]} | {r['alpha']:g} | {r['accuracy']:.4f} | "
                     f"{r['before']['mean_confidence']:.4f} | {r['before']['ece']:.4f} | {r['temperature']:.2f} | "
                     f"{r['after']['ece']:.4f} | {r['before']['log_loss']:.3f} → {r['after']['log_loss']:.3f} |")
    d = c["digits"]
    t = c["rotten_tomatoes"]
    lines += ["", "Label smoothing caps the confidence a network is trained towards at 1 − α + α/K; where the "
              "unsmoothed network is already right more often than that (digits), smoothing makes it "
              "under-confident (T < 1), where it is over-confident (Rotten Tomatoes, ~70% accuracy) smoothing "
              "moves it towards calibration.", "",
              f"Setups: digits as a table (data/digits.csv), split val {d['split']['val']} / test {d['split']['test']} "
              f"(seed 0), MLP {' → '.join(['64', *map(str, d['hidden']), '10'])}, AdamW lr {d['lr']} without weight "
              f"decay, {d['epochs']} epochs; Rotten Tomatoes, split val {t['split']['val']} / test "
              f"{t['split']['test']}, transformer d_model {t['d_model']}, 1 layer, 2 heads, max_length "
              f"{t['max_length']}, AdamW lr {t['lr']}, {t['epochs']} epochs. Both keep the last epoch's weights "
              "(monitor train/loss) and fit T on their validation split by LBFGS on the NLL, as `dlforge train` "
              "does.", "",
              "See reliability_digits.png and reliability_rotten_tomatoes.png (before and after scaling) and "
              "label_smoothing.png. Every classifier's report (`dlforge report`) now shows the same before/after "
              "reliability diagram.", ""]
    return "\n".join(lines)
