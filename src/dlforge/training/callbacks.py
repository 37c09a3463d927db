"""Callbacks: hooks named on_<stage>_<event>, called by the Trainer with itself as argument.

A callback keeps what it must carry across a resume in `state_dict()`; the Trainer saves it
in the checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dlforge.errors import DlforgeError

if TYPE_CHECKING:
    from dlforge.training.trainer import Trainer

log = logging.getLogger("dlforge")


class Callback:
    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...
    def on_train_epoch_start(self, trainer: Trainer) -> None: ...
    def on_train_epoch_end(self, trainer: Trainer) -> None: ...
    def on_train_batch_start(self, trainer: Trainer, batch: Any, index: int) -> None: ...
    def on_train_batch_end(self, trainer: Trainer, loss: torch.Tensor, index: int) -> None: ...
    def on_train_backward_end(self, trainer: Trainer) -> None:
        """Gradients are ready (unscaled, before clipping and the optimizer step)."""
    def on_validation_epoch_start(self, trainer: Trainer) -> None: ...
    def on_validation_epoch_end(self, trainer: Trainer) -> None: ...
    def on_validation_batch_start(self, trainer: Trainer, batch: Any, index: int) -> None: ...
    def on_validation_batch_end(self, trainer: Trainer, loss: torch.Tensor, index: int) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EarlyStopping(Callback):
    """Stop when the trainer's monitored metric has not improved by `min_delta` for `patience` epochs."""

    def __init__(self, patience: int = 5, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best_: float | None = None
        self.wait_ = 0

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        score = trainer.epoch_row[trainer.monitor]
        sign = 1.0 if trainer.monitor_mode == "max" else -1.0
        if self.best_ is None or sign * (score - self.best_) > self.min_delta:
            self.best_, self.wait_ = score, 0
            return
        self.wait_ += 1
        if self.wait_ >= self.patience:
            log.info("early stopping: %s has not improved for %d epochs (best %.4f)", trainer.monitor,
                     self.patience, self.best_)
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best_, "wait": self.wait_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_, self.wait_ = state["best"], state["wait"]


class GradientFlow(Callback):
    """Per-layer gradient norms, sampled every `every` batches and at each epoch's last batch,
    averaged per epoch into the metrics row.

    A layer whose mean norm falls below `vanish_below` or rises above `explode_above` (or is not
    finite) is listed under `grad_warnings` every epoch, and logged when it starts (a detector's
    stride-32 head with no large objects to learn from would otherwise repeat every epoch).
    """

    def __init__(self, every: int = 25, vanish_below: float = 1e-7, explode_above: float = 1e3) -> None:
        self.every = every
        self.vanish_below = vanish_below
        self.explode_above = explode_above
        self._flagged: set[str] = set()  # layers flagged in the previous epoch

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self._names: list[str] = []
        self._sums: torch.Tensor | None = None
        self._count = 0

    def on_train_backward_end(self, trainer: Trainer) -> None:
        # Every `every`-th optimizer step and the epoch's last one, so each epoch has at least one sample.
        i = trainer.batch_index
        if (i // trainer.config.accumulate_grad_batches + 1) % self.every and i + 1 != trainer.num_batches:
            return
        named = [(n, p.grad) for n, p in trainer.model.named_parameters() if p.grad is not None]
        if not named:
            return
        names = [n for n, _ in named]
        norms = torch.stack(torch._foreach_norm([g.detach().float() for _, g in named]))  # (L,)
        if names != self._names:  # e.g. the backbone was unfrozen: start the epoch's sums over
            self._names, self._sums, self._count = names, torch.zeros_like(norms), 0
        self._sums += norms
        self._count += 1

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        if not self._count:
            return
        means = (self._sums / self._count).tolist()
        trainer.epoch_row["grad_norm"] = dict(zip(self._names, means, strict=True))
        warnings, new, flagged = [], [], set()
        for name, value in zip(self._names, means, strict=True):
            if not math.isfinite(value) or value > self.explode_above:
                state = f"exploding (> {self.explode_above:g})"
            elif value < self.vanish_below and not name.endswith("bias"):
                # Not biases: some get no gradient by construction (attention key biases shift every score
                # of a query alike, which softmax ignores).
                state = f"vanishing (< {self.vanish_below:g})"
            else:
                continue
            warnings.append(f"epoch {trainer.epoch + 1}: {name}: gradient norm {value:.3g} {state}")
            flagged.add(name)
            if name not in self._flagged:
                new.append(warnings[-1])
        self._flagged = flagged
        if not trainer.dist.is_main:
            return
        for w in new[:5]:
            log.warning(w)
        if len(new) > 5:
            log.warning("... and %d more gradient warnings (see metrics.jsonl)", len(new) - 5)
        trainer.epoch_row["grad_warnings"] = warnings


class BackboneFreeze(Callback):
    """Train only the head for the first `epochs` epochs (backbone frozen, its BatchNorm in eval mode)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        backbone = getattr(trainer.model, "backbone", None)
        if backbone is None:
            raise DlforgeError("train.freeze_backbone_epochs: this model has no `backbone` to freeze")
        frozen = trainer.epoch < self.epochs
        for p in backbone.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            backbone.eval()
        if trainer.epoch == self.epochs and self.epochs:
            log.info("epoch %d: backbone unfrozen", trainer.epoch + 1)


def _summary(trainer: Trainer) -> str:
    row = trainer.epoch_row
    parts = [f"{k} {v:.4f}" for k, v in row.items() if "/" in k and isinstance(v, float)]
    return (f"epoch {row['epoch']}/{trainer.config.epochs}  " + "  ".join(parts) +
            f"  lr {row['lr']:.2e}  {row['time_s']:.1f}s")


class ProgressBar(Callback):
    """A rich progress bar (loss, ETA) on a terminal, with one summary line per epoch."""

    def __init__(self) -> None:
        self._last = 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
        self.progress.start()
        self.epochs = self.progress.add_task("epochs", total=trainer.config.epochs, completed=trainer.epoch,
                                             info="")

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self.batches = self.progress.add_task(f"epoch {trainer.epoch + 1}", total=trainer.num_batches, info="")

    def on_train_batch_end(self, trainer: Trainer, loss: torch.Tensor, index: int) -> None:
        now = time.monotonic()
        if now - self._last > 0.2 or index + 1 == trainer.num_batches:  # reading loss syncs a GPU: not every step
            self._last = now
            self.progress.update(self.batches, completed=index + 1, info=f"loss {loss.item():.4f}")

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        self.progress.remove_task(self.batches)
        self.progress.update(self.epochs, completed=trainer.epoch + 1,
                             info=f"{trainer.monitor} {trainer.epoch_row.get(trainer.monitor, float('nan')):.4f}")
        self.progress.console.print(_summary(trainer))

    def on_fit_end(self, trainer: Trainer) -> None:
        self.progress.stop()


class LogLines(Callback):
    """Off a terminal: one log line per epoch, and a line every `every_s` seconds within long epochs."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self._last = time.monotonic()

    def on_train_batch_end(self, trainer: Trainer, loss: torch.Tensor, index: int) -> None:
        if time.monotonic() - self._last > self.every_s:
            self._last = time.monotonic()
            log.info("epoch %d: batch %d/%d loss %.4f", trainer.epoch + 1, index + 1, trainer.num_batches,
                     loss.item())

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        log.info(_summary(trainer))
