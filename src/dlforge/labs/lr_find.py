"""`dlforge lr-find SPEC`: the learning-rate range test (Smith 2017, "Cyclical learning rates for training neural
networks", §3.3) through the real Trainer, on the spec's own data, model, optimizer and batch size.

The learning rate grows exponentially from `start` to `end` over `steps` optimizer steps (each of the spec's
`accumulate_grad_batches` batches), and the mean training loss of each step's batches is recorded. The loss
falls slowly while the rate is too small to matter, fast over the useful range, then turns up and explodes
once the rate is too large. The test stops at `end` or when the smoothed loss exceeds `diverge` times its
minimum.

Read off the curve of the smoothed loss (an exponential moving average of the step losses, debiased as Adam
debiases its moments; 0.9, a window of about 10 steps: fastai's 0.98 lagged the rate by two decades over 200
steps) against the rate on a log axis:

* `lr`, the suggestion for the spec's own schedule: the rate where the smoothed loss falls fastest per decade
  (its most negative slope against log10 lr), before its minimum;
* `onecycle_max_lr`: a tenth of the rate at the loss minimum: Smith's upper bound ("where the loss stops
  falling"), backed off by one decade because the smoothed loss lags the rate and the minimum sits on the
  edge of divergence (the rule fastai's `lr_find` popularised as `lr_min`).

Nothing is written to a run directory and the model's weights are thrown away: only the curve, its plot and
the suggestion remain. The spec's schedule, early stopping, backbone freezing and fairness reweighing play no
part: the test measures the loss against the rate alone.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dlforge._io import atomic_write_json
from dlforge.errors import DlforgeError
from dlforge.training.callbacks import Callback

if TYPE_CHECKING:
    from dlforge.spec import SpecBase
    from dlforge.training.trainer import Trainer

log = logging.getLogger("dlforge")


class _Finished(Exception):
    """Raised by the range test's callback to leave the Trainer's loop mid-epoch."""


class RangeTest(Callback):
    """Sets the learning rate of every parameter group before each optimizer step, records each batch's loss,
    and stops the Trainer (by raising `_Finished`) after the last rate or once the loss has diverged."""

    def __init__(self, lrs: np.ndarray, smoothing: float, diverge: float) -> None:
        self.lrs, self.smoothing, self.diverge = lrs, smoothing, diverge
        self.rows: list[dict[str, float]] = []  # one per optimizer step
        self._group: list[float] = []  # the losses of the batches an optimizer step accumulates
        self._average, self._best = 0.0, math.inf
        self.stopped = "end"

    def on_train_batch_start(self, trainer: Trainer, batch: Any, index: int) -> None:
        lr = float(self.lrs[min(trainer.global_step, len(self.lrs) - 1)])  # one rate per optimizer step
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr

    def on_train_batch_end(self, trainer: Trainer, loss: torch.Tensor, index: int) -> None:
        self._group.append(float(loss))
        if trainer.global_step == len(self.rows):  # gradients still accumulating: no step taken yet
            return
        value = sum(self._group) / len(self._group)
        self._group = []
        n = len(self.rows) + 1
        self._average = self.smoothing * self._average + (1 - self.smoothing) * value
        smoothed = self._average / (1 - self.smoothing**n)  # debiased: the first averages start from 0
        self.rows.append({"lr": float(self.lrs[n - 1]), "loss": value, "smoothed": smoothed})
        self._best = min(self._best, smoothed)
        if not math.isfinite(value) or smoothed > self.diverge * self._best:
            self.stopped = "diverged"
            raise _Finished
        if trainer.global_step >= len(self.lrs):  # the step after the last rate has been taken
            raise _Finished


def suggest(lrs: np.ndarray, smoothed: np.ndarray, skip: float = 0.1) -> dict[str, float]:
    """From the smoothed loss at each rate: the rate of steepest descent per decade before the minimum (`lr`),
    the rate at the minimum (`min_loss_lr`) and a tenth of it (`onecycle_max_lr`). The first `skip` share of
    the points (where the moving average is still settling) is not looked at."""
    start = int(len(lrs) * skip)
    if len(lrs) - start < 5:
        raise DlforgeError(f"the range test stopped after {len(lrs)} steps: too few to read a learning rate from "
                           "(lower --start, or raise --steps)")
    lrs, smoothed = lrs[start:], smoothed[start:]
    lowest = int(np.argmin(smoothed))
    slope = np.gradient(smoothed, np.log10(lrs))  # d loss / d log10(lr)
    steepest = int(np.argmin(slope[: max(lowest, 1)]))
    return {"lr": float(lrs[steepest]), "min_loss_lr": float(lrs[lowest]),
            "onecycle_max_lr": float(lrs[lowest]) / 10, "steepest_slope_per_decade": float(slope[steepest])}


def lr_range_test(spec: SpecBase, out: Path, start: float = 1e-7, end: float = 10.0, steps: int = 200,
                  smoothing: float = 0.9, diverge: float = 4.0, progress: bool = False) -> dict[str, Any]:
    """Run the range test on `spec`'s data and model through the Trainer; write `lr_find.json` and
    `lr_find.png` into `out`; return the curve and the suggestion."""
    from torch.utils.data import Subset

    from dlforge.devices import seed_everything
    from dlforge.registry import TASKS

    if not 0 < start < end:
        raise DlforgeError(f"the range test needs 0 < start < end (got start {start:g}, end {end:g})")
    if steps < 20:
        raise DlforgeError(f"--steps {steps}: the range test needs at least 20 steps (Smith used a few hundred)")
    seed_everything(spec.train.seed)
    task = TASKS.get(spec.task)(spec)
    prepared = task.prepare()
    # The spec's optimizer, batch size and precision; no schedule (the callback sets the rate) and only enough
    # epochs to take every step. Validation still runs at each epoch's end: one batch of it is enough.
    batches = math.ceil(len(prepared.train) / spec.train.batch_size)
    config = spec.train.model_copy(update={"scheduler": "none", "warmup": 0.0, "early_stopping": None,
                                           "epochs": math.ceil(steps * spec.train.accumulate_grad_batches / batches)
                                           + 1})
    val = Subset(prepared.val, range(min(len(prepared.val), spec.train.batch_size)))
    if hasattr(prepared.val, "collate"):  # the Trainer batches with the dataset's own collate (text: padding)
        val.collate = prepared.val.collate
    lrs = np.geomspace(start, end, steps)
    test = RangeTest(lrs, smoothing, diverge)
    from dlforge.training.trainer import Trainer

    log.info("lr-find: %s, learning rate %.0e -> %.0e over %d steps (%d batches per epoch)", spec.name, start, end,
             steps, batches)
    with contextlib.suppress(_Finished):  # the callback's way out of the loop
        Trainer(config, callbacks=[test], progress=progress).fit(task, prepared.model, prepared.train, val,
                                                                  prepared.meta)
    if not test.rows:
        raise DlforgeError("the range test recorded no training step")
    rows = test.rows
    curve = {k: [r[k] for r in rows] for k in ("lr", "loss", "smoothed")}
    suggestion = suggest(np.array(curve["lr"]), np.array(curve["smoothed"]))
    result = {"spec": spec.name, "task": spec.task, "optimizer": spec.train.optimizer.name,
              "batch_size": spec.train.batch_size, "start": start, "end": end, "steps": steps,
              "steps_taken": len(rows), "stopped": test.stopped, "smoothing": smoothing, "diverge": diverge,
              **suggestion, "curve": curve}
    out.mkdir(parents=True, exist_ok=True)
    plot_range_test(result, out / "lr_find.png")
    atomic_write_json(out / "lr_find.json", result)
    return result


def plot_range_test(result: dict[str, Any], path: Path) -> Path:
    """Batch loss and smoothed loss against the learning rate (log axis), the suggestions marked."""
    from dlforge.plots import plt, save

    curve = result["curve"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(curve["lr"], curve["loss"], color="C0", alpha=0.3, lw=1, label="batch loss")
    ax.plot(curve["lr"], curve["smoothed"], color="C0", lw=2, label="smoothed loss")
    for key, colour, text in (("lr", "C2", "suggested lr (steepest descent)"),
                              ("onecycle_max_lr", "C1", "one-cycle max (min-loss lr / 10)"),
                              ("min_loss_lr", "C3", "loss minimum")):
        ax.axvline(result[key], color=colour, ls="--", lw=1, label=f"{text}: {result[key]:.2g}")
    ax.set_xscale("log")
    low = min(curve["smoothed"])
    first = curve["smoothed"][0]
    ax.set_ylim(low - 0.1 * abs(first - low) - 1e-3, first + 0.5 * abs(first - low) + 1e-3)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"learning-rate range test: {result['spec']} ({result['steps_taken']} steps, {result['stopped']})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save(fig, path)
