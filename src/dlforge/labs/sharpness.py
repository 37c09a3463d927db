"""`dlforge diagnose RUN --sharpness`: the top Hessian eigenvalues of a finished run's training loss, against the
stability threshold of its learning rate (the hessian lab's tool, `dlforge.labs.hessian`).

Gradient descent at step η is stable along a direction of curvature λ only while λ < 2/η (Cohen et al. 2021
found full-batch training sits right at that edge). The diagnosis loads the run's trained weights, draws
`examples` of its training examples (as the training loader gives them: augmentations drawn once, seeded),
and finds the top eigenvalues of the loss the task trains with, in eval mode so that the loss is one fixed
function (dropout off, batch norm on its running statistics), by Lanczos on Hessian-vector products. It
compares the largest, λ_max, with 2/η for the final learning rate the run logged (and the peak one): the ratio
λ_max / (2/η) is 1 at the edge. With SGD and momentum β the threshold is 2(1 + β)/η (heavy ball on a quadratic);
for Adam the plain criterion does not hold as such (its steps are preconditioned), and the number is a
reference only.

Writes `<run>/diagnostics/sharpness.json` and `<run>/plots/sharpness.png`, then rewrites the run's report.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge._io import atomic_write_json
from dlforge.errors import DlforgeError
from dlforge.labs.hessian import FlatParameters, top_eigenvalues

log = logging.getLogger("dlforge")


def training_sample(spec: Any, run_path: Path, examples: int, seed: int) -> tuple[Any, Any, int]:
    """The run's task (assets loaded) and one collated batch of `examples` random training examples."""
    from torch.utils.data import DataLoader, Subset

    import dlforge.tasks  # noqa: F401  (registers the tasks)
    from dlforge.devices import seed_everything
    from dlforge.registry import TASKS

    seed_everything(spec.train.seed)  # the run's own split and preprocessing
    task = TASKS.get(spec.task)(spec)
    task.load_assets(run_path / "assets")
    train = task.prepare().train
    rows = np.sort(np.random.default_rng(seed).choice(len(train), size=min(examples, len(train)), replace=False))
    torch.manual_seed(seed)  # augmentations, drawn once
    loader = DataLoader(Subset(train, rows.tolist()), batch_size=len(rows), collate_fn=getattr(train, "collate", None))
    return task, next(iter(loader)), len(rows)


def thresholds(optimizer: Any, lr: float) -> tuple[float | None, str]:
    """The stability threshold of a step at `lr` for the run's optimizer, and how it is computed."""
    if lr <= 0:
        return None, "η = 0"
    if optimizer.name == "sgd" and optimizer.momentum:
        return 2 * (1 + optimizer.momentum) / lr, f"2(1 + β)/η, β = {optimizer.momentum:g} (heavy ball)"
    note = "" if optimizer.name == "sgd" else " (plain gradient descent's; Adam preconditions its steps)"
    return 2 / lr, "2/η" + note


def diagnose_sharpness(run_dir: str | Path, examples: int = 512, k: int = 5, device: str = "cpu", seed: int = 0,
                       tol: float = 1e-4) -> dict[str, Any]:
    """Top-k Hessian eigenvalues of the run's training loss on a sample of its training data, the ratio of its
    final learning rate to 2/λ_max, a figure, and a report section. Returns what it writes to
    `<run>/diagnostics/sharpness.json`."""
    from dlforge.devices import to_device
    from dlforge.predictor import Predictor
    from dlforge.report.html import write_report
    from dlforge.run import Run

    run = Run.open(run_dir)
    spec = run.read_spec()
    history = run.read_metrics()
    if not history:
        raise DlforgeError(f"{run.path}: no metrics.jsonl rows: no learning rate to compare with")
    if k < 1:
        raise DlforgeError(f"--top {k}: ask for at least one eigenvalue")
    model = Predictor.from_run(run, device=device).model  # the trained weights
    task, batch, n = training_sample(spec, run.path, examples, seed)
    model.eval()
    batch = to_device(batch, next(model.parameters()).device)
    flat = FlatParameters(model)
    with torch.no_grad():
        if task.step(model, batch)[0] is None:
            raise DlforgeError(f"{spec.task} models give no training loss in eval mode: their sharpness cannot be "
                               "measured this way")

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return task.step(flat.bind(theta), batch)[0].float()

    log.info("sharpness: top %d Hessian eigenvalues of %s's training loss (%d parameters, %d examples)", k,
             run.path.name, flat.theta.numel(), n)
    started = time.perf_counter()
    values, _, products = top_eigenvalues(loss, flat.theta, k=min(k, flat.theta.numel() - 1), tol=tol)
    seconds = time.perf_counter() - started
    lrs = [float(row["lr"]) for row in history]
    lr, peak = lrs[-1], max(lrs)
    threshold, rule = thresholds(spec.train.optimizer, lr)
    peak_threshold, _ = thresholds(spec.train.optimizer, peak)
    top = float(values[0])
    ratio = top / threshold if threshold else 0.0
    result = {"run": run.path.name, "eigenvalues": values.tolist(), "lambda_max": top, "lr": lr, "peak_lr": peak,
              "optimizer": spec.train.optimizer.name, "threshold": threshold, "threshold_rule": rule,
              "ratio": ratio, "peak_threshold": peak_threshold,
              "peak_ratio": top / peak_threshold if peak_threshold else 0.0,
              "stable_lr": 2 / top if top > 0 else None, "examples": n, "mode": "eval mode (dropout off, batch "
              "norm on running statistics); augmentations drawn once", "parameters": int(flat.theta.numel()),
              "hessian_vector_products": products, "seconds": round(seconds, 1), "lr_history": lrs,
              "verdict": _verdict(top, lr, peak, threshold, ratio, rule)}
    atomic_write_json(run.path / "diagnostics" / "sharpness.json", result)
    plot_sharpness(result, run.path / "plots" / "sharpness.png")
    write_report(run)
    return result


def _verdict(top: float, lr: float, peak: float, threshold: float | None, ratio: float, rule: str) -> str:
    if threshold is None:
        return (f"λ_max = {top:.4g}. The run's learning rate ended at 0 (its schedule decays to 0), so no step was "
                f"near the edge at the end; gradient descent is stable along λ_max below η = {2 / top:.3g}, and the "
                f"peak rate was {peak:.3g}.") if top > 0 else f"λ_max = {top:.4g}: no positive curvature found."
    where = ("below the edge of stability: steps at this rate are stable along every direction" if ratio < 0.8 else
             "at the edge of stability (Cohen et al. 2021)" if ratio <= 1.2 else
             "above the edge: gradient descent at this rate would be unstable along the top eigenvector")
    return (f"λ_max = {top:.4g} against {rule} = {threshold:.4g} at the final learning rate η = {lr:.3g}: "
            f"λ_max / threshold = {ratio:.3g}, {where}.")


def plot_sharpness(result: dict[str, Any], path: Path) -> Path:
    """Left: the top eigenvalues against the thresholds; right: the learning rate per epoch against 2/λ_max."""
    from dlforge.plots import plt, save

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    values = result["eigenvalues"]
    a.bar(range(1, len(values) + 1), values, color="C0")
    for key, lr, colour, when in (("threshold", result["lr"], "C3", "final"),
                                  ("peak_threshold", result["peak_lr"], "C1", "peak")):
        if result[key] and (when == "final" or result["peak_lr"] != result["lr"]):
            a.axhline(result[key], color=colour, ls="--", label=f"threshold at the {when} η = {lr:.3g}: "
                                                                 f"{result[key]:.3g}")
    if result["threshold"] is None or result["threshold"] > 20 * max(values):
        a.set_yscale("log")
    a.set_xlabel("rank")
    a.set_ylabel("Hessian eigenvalue")
    a.set_title(f"top eigenvalues ({result['examples']} training examples)")
    a.legend(fontsize=7)
    epochs = range(1, len(result["lr_history"]) + 1)
    b.plot(epochs, result["lr_history"], "o-", ms=3, label="learning rate (end of epoch)")
    if result["stable_lr"]:
        b.axhline(result["stable_lr"], color="C3", ls="--", label=f"2/λ_max = {result['stable_lr']:.3g}")
    b.set_yscale("log")
    b.set_xlabel("epoch")
    b.set_ylabel("learning rate")
    b.set_title("the run's learning rate against the edge 2/λ_max")
    b.legend(fontsize=7)
    return save(fig, path)
