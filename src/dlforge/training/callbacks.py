"""Callbacks: hooks named on_<stage>_<event>, called by the Trainer with itself as argument.

A callback keeps what it must carry across a resume in `state_dict()`; the Trainer saves it
in the checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
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
from torch import nn

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

    A layer whose mean norm is not finite or above `explode_above` is exploding. One below `vanish_below` is
    vanishing only if a layer between it and the loss has a larger gradient (read off the autograd graph of each
    epoch's first step): the loss's gradient reached that far and shrank on the way back. A layer with nothing
    larger between it and the loss got (almost) no gradient from the loss at all: a detector's stride-32 head before
    it has seen a large object, a pooler the task does not use. Those are "unused so far" (`grad_unused`, logged
    once), not warnings. Without the graph (a compiled model) a layer is unused while its gradient was None or exactly
    zero at every recorded step. Warnings are listed under `grad_warnings` every epoch, and logged when they start.
    """

    def __init__(self, every: int = 25, vanish_below: float = 1e-7, explode_above: float = 1e3) -> None:
        self.every = every
        self.vanish_below = vanish_below
        self.explode_above = explode_above
        self._flagged: set[str] = set()  # layers flagged in the previous epoch
        self._used: set[str] = set()  # layers with a non-zero gradient at some recorded step of the fit
        self._told_unused: set[str] = set()

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self._names: list[str] = []
        self._sums: torch.Tensor | None = None
        self._count = 0
        self._between: dict[str, set[str]] = {}  # layer -> the layers on its paths to the loss
        # Compiled, the graph is one opaque node, and a hook added or removed would recompile the model.
        self._hook = None if trainer.config.compile else trainer.model.register_forward_hook(self._read_graph)

    def _read_graph(self, model: nn.Module, args: Any, outputs: Any) -> None:
        if not torch.is_grad_enabled():
            return
        self._hook.remove()
        self._hook = None
        self._between = _layers_between(outputs, dict(model.named_parameters()))

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
        if self._hook is not None:  # no forward with gradients this epoch
            self._hook.remove()
            self._hook = None
        if not self._count:
            return
        means = dict(zip(self._names, (self._sums / self._count).tolist(), strict=True))
        trainer.epoch_row["grad_norm"] = means
        self._used |= {n for n, v in means.items() if v > 0}  # a sum of norms is zero only if every one was
        large = {n for n, v in means.items() if v >= self.vanish_below}
        # never given a gradient at all (grad None): a module the loss does not reach (its weights name it)
        unused = [n for n, p in trainer.model.named_parameters()
                  if p.requires_grad and n not in means and not n.endswith("bias")]
        warnings, new, flagged = [], [], set()
        for name, value in means.items():
            if not math.isfinite(value) or value > self.explode_above:
                state = f"exploding (> {self.explode_above:g})"
            elif value < self.vanish_below and not name.endswith("bias"):
                # Not biases: some get no gradient by construction (attention key biases shift every score
                # of a query alike, which softmax ignores).
                between = self._between.get(name)
                if not ((between - {name}) & large if between is not None else name in self._used):
                    unused.append(name)
                    continue
                state = f"vanishing (< {self.vanish_below:g})"
            else:
                continue
            warnings.append(f"epoch {trainer.epoch + 1}: {name}: gradient norm {value:.3g} {state}")
            flagged.add(name)
            if name not in self._flagged:
                new.append(warnings[-1])
        self._flagged = flagged
        if unused:
            trainer.epoch_row["grad_unused"] = unused
        if not trainer.dist.is_main:
            return
        for w in new[:5]:
            log.warning(w)
        if len(new) > 5:
            log.warning("... and %d more gradient warnings (see metrics.jsonl)", len(new) - 5)
        if told := [n for n in unused if n not in self._told_unused]:
            self._told_unused.update(told)
            log.info("epoch %d: %d layer(s) unused so far (no gradient reaches them from the loss): %s%s",
                     trainer.epoch + 1, len(told), ", ".join(told[:5]), " ..." if len(told) > 5 else "")
        trainer.epoch_row["grad_warnings"] = warnings


def _layers_between(outputs: Any, parameters: dict[str, torch.Tensor]) -> dict[str, set[str]]:
    """Each named parameter in the autograd graph of `outputs` -> the parameters used on its paths to `outputs`
    (its own layer's included: a large bias gradient says the loss's gradient reaches the layer's output)."""
    index = {id(p): i for i, p in enumerate(parameters.values())}
    roots = [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
    order, seen, stack = [], set(), [(node, False) for node in roots]
    while stack:  # depth-first post-order: each node after every node it feeds from
        node, done = stack.pop()
        if done:
            order.append(node)
        elif node not in seen:
            seen.add(node)
            stack.append((node, True))
            stack.extend((child, False) for child, _ in node.next_functions if child is not None)
    below: dict[Any, int] = {}  # node -> bit set of the parameters between it and the outputs
    found: dict[int, int] = {}  # parameter index -> bit set
    for node in reversed(order):  # outputs first: every consumer of a node comes before it
        between = below.get(node, 0)
        variable = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf
        if variable is not None:
            if id(variable) in index:
                found[index[id(variable)]] = found.get(index[id(variable)], 0) | between
            continue
        children = [child for child, _ in node.next_functions if child is not None]
        for leaf in map(_parameter_of, children):  # the node's own weights (maybe through a transpose or view)
            if leaf is not None and id(leaf) in index:
                between |= 1 << index[id(leaf)]
        for child in children:
            below[child] = below.get(child, 0) | between
    names = list(parameters)
    return {names[i]: {names[j] for j in range(len(names)) if bits >> j & 1} for i, bits in found.items()}


def _parameter_of(node: Any) -> torch.Tensor | None:
    """The leaf tensor a chain of one-input nodes (a transpose, a view) leads to, if it leads to one."""
    while getattr(node, "variable", None) is None:
        inputs = [child for child, _ in node.next_functions if child is not None]
        if len(inputs) != 1:
            return None
        node = inputs[0]
    return node.variable


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a model's output: a tensor, or a (nested) mapping, list or tuple of them."""
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list | tuple) else ()
    return [t for item in items for t in _tensors(item)]


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
