"""The Trainer: one loop for every task.

The task supplies the research code (model, `step`, loss, metrics); the Trainer owns the
engineering: device, mixed precision, optimizer and schedule, clipping, validation, callbacks,
distributed data parallel under torchrun, and checkpoints from which a killed run resumes to
the same weights, bit for bit on the CPU.

Exact resume rests on two rules: the shuffle order of epoch e depends only on (seed, e), and
the global RNG states are saved with every checkpoint, taken at the end of an epoch.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from dlforge._io import atomic_write, atomic_write_bytes
from dlforge.devices import Distributed, autocast_dtype, select_device, to_device
from dlforge.errors import DlforgeError
from dlforge.spec import TrainSpec
from dlforge.training.callbacks import Callback, LogLines, ProgressBar

if TYPE_CHECKING:
    from dlforge.run import Run
    from dlforge.tasks.base import Task

log = logging.getLogger("dlforge")


class Trainer:
    def __init__(self, config: TrainSpec, callbacks: Sequence[Callback] = (), run: Run | None = None,
                 progress: bool | None = None) -> None:
        self.config = config
        self.callbacks = list(callbacks)
        self.run = run
        self.progress = progress  # None: a progress bar on a terminal, log lines otherwise

    # ------------------------------------------------------------------ fit
    def fit(self, task: Task, model: nn.Module, train: Dataset, val: Dataset, meta: dict[str, Any],
            resume: bool = False, sample_weights: Sequence[float] | None = None) -> Trainer:
        """Train `model` on `train`, validating on `val` each epoch. `sample_weights` (one per training example, e.g.
        fairness reweighing) draw each epoch's examples with replacement in proportion to them (`WeightedSampler`)."""
        cfg = self.config
        self.task, self.model = task, model
        device = select_device(cfg.device)
        self.dist = Distributed.from_env(device)
        self.device = self.dist.device(device)
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        self.monitor = cfg.monitor.metric or task.default_monitor
        mode = cfg.monitor.mode
        self.monitor_mode = mode if mode != "auto" else ("min" if self.monitor.endswith("loss") else "max")
        model.to(self.device)

        train_model: nn.Module = model
        if self.dist.enabled:
            # A frozen backbone gives no gradients: DDP must not wait for them.
            train_model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.index is not None else None,
                find_unused_parameters=cfg.freeze_backbone_epochs > 0)
        if cfg.compile:
            train_model = torch.compile(train_model)
        self.train_model = train_model
        # Validation runs each rank on its shard without DDP's gradient hooks.
        self.eval_model = model if self.dist.enabled else train_model

        self.train_loader, self.train_sampler, self.generator = self._loader(train, shuffle=True,
                                                                             weights=sample_weights)
        self.val_loader, _, _ = self._loader(val, shuffle=False)
        self.num_batches = len(self.train_loader)
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.metrics = task.metrics(meta).to(self.device)

        self.epoch, self.global_step, self.history = 0, 0, []
        self.best_score_: float | None = None
        self.best_epoch_: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self.should_stop = False
        if resume:
            self._load_checkpoint()

        progress = self.progress if self.progress is not None else sys.stderr.isatty()
        if self.dist.is_main:
            self.callbacks.append(ProgressBar() if progress else LogLines())
        self._call("on_fit_start")
        try:
            while self.epoch < cfg.epochs and not self.should_stop:
                self._epoch()
        finally:
            self._call("on_fit_end")
        self._restore_best()
        if self.dist.enabled:
            # Free the DDP wrapper (its reducer holds the process group) before the group is destroyed.
            # Not in one process: a full gc.collect() costs ~0.2 s there.
            self.train_model = self.eval_model = model
            gc.collect()
            self.dist.close()
        return self

    # ------------------------------------------------------------------ one epoch
    def _epoch(self) -> None:
        started = time.perf_counter()
        self.model.train()
        self.epoch_row: dict[str, Any] = {"epoch": self.epoch + 1}
        self._call("on_train_epoch_start")
        # The shuffle order depends on (seed, epoch) alone, so a resumed run sees the same batches.
        self.generator.manual_seed(self.config.seed + self.epoch)
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(self.epoch)
        loss_sum = torch.zeros((), device=self.device)
        count = torch.zeros((), device=self.device)
        accumulate = self.config.accumulate_grad_batches
        self.optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(self.train_loader):
            self.batch_index = index
            batch = to_device(batch, self.device)
            # With accumulation, an optimizer step closes each group of `accumulate` batches (and the epoch).
            steps = (index + 1) % accumulate == 0 or index + 1 == self.num_batches
            self._call("on_train_batch_start", batch, index)
            with self._no_sync(steps), self._autocast():
                loss, _, _ = self.task.step(self.train_model, batch)
            group = min(accumulate, self.num_batches - index // accumulate * accumulate)  # batches in this group
            scaled = loss / group
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
            if steps:
                self._optimizer_step()
            n = _batch_len(batch)
            loss_sum += loss.detach().float() * n
            count += n
            self._call("on_train_batch_end", loss.detach(), index)
        train_loss = float(self.dist.sum(loss_sum) / self.dist.sum(count).clamp_min(1))
        if not math.isfinite(train_loss):
            raise DlforgeError(f"training diverged: the loss is {train_loss} in epoch {self.epoch + 1}; "
                               "lower train.optimizer.lr or set train.grad_clip")
        self.epoch_row.update({"step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                               "train/loss": train_loss, **self._validate()})
        self.epoch_row["time_s"] = time.perf_counter() - started
        self._call("on_train_epoch_end")
        self._track_best()
        self.history.append(self.epoch_row)
        self.epoch += 1
        if self.run is not None and self.dist.is_main:
            # Metrics row first, then the checkpoint: a kill in between leaves a row that resume drops.
            self.run.append_metrics(self.epoch_row)
            if self.config.checkpoint:
                self._save_checkpoint()
        self.dist.barrier()

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        self._call("on_train_backward_end")
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1

    def _no_sync(self, steps: bool) -> contextlib.AbstractContextManager:
        """Under DDP, batches that only accumulate skip the gradient all-reduce."""
        if steps or not isinstance(self.train_model, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.train_model.no_sync()

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        self.model.eval()
        self.metrics.reset()
        self._call("on_validation_epoch_start")
        loss_sum = torch.zeros((), device=self.device)
        count = torch.zeros((), device=self.device)
        seen = torch.zeros((), device=self.device)
        for index, batch in enumerate(self.val_loader):
            batch = to_device(batch, self.device)
            self._call("on_validation_batch_start", batch, index)
            with self._autocast():
                loss, outputs, targets = self.task.step(self.eval_model, batch)
            self.metrics.update(outputs.float() if torch.is_tensor(outputs) else outputs, targets)
            n = _batch_len(batch)
            if loss is not None:  # detectors in eval mode give detections, not losses
                loss_sum += loss.float() * n
                count += n
            seen += n
            self._call("on_validation_batch_end", loss, index)
        values = {}
        if int(self.dist.sum(seen)):  # an empty validation split logs nothing
            values = {f"val/{k}": float(v) for k, v in self.metrics.compute().items()}
        if int(self.dist.sum(count)):
            values["val/loss"] = float(self.dist.sum(loss_sum) / self.dist.sum(count))
        self._call("on_validation_epoch_end")
        return values

    # ------------------------------------------------------------------ best weights
    def _track_best(self) -> None:
        score = self.epoch_row.get(self.monitor)
        if score is None:
            raise DlforgeError(f"train.monitor.metric: {self.monitor!r} is not logged; logged: "
                               + ", ".join(k for k in self.epoch_row if "/" in k))
        sign = 1.0 if self.monitor_mode == "max" else -1.0
        if self.best_score_ is not None and sign * (score - self.best_score_) <= 0:
            return
        self.best_score_, self.best_epoch_ = score, self.epoch + 1
        if self.run is not None and self.dist.is_main:
            path = self.run.path / "checkpoints" / "best.safetensors"
            atomic_write(path, lambda p: save_model(self.model, str(p)))
        elif self.run is None:
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _restore_best(self) -> None:
        if self.best_epoch_ is None or self.best_epoch_ == self.epoch:
            return  # the last epoch was the best: the model already holds it
        log.info("restoring the weights of epoch %d (best %s %.4f)", self.best_epoch_, self.monitor,
                 self.best_score_)
        if self.run is not None:
            load_model(self.model, self.run.path / "checkpoints" / "best.safetensors", device=str(self.device))
        elif self._best_state is not None:
            self.model.load_state_dict(self._best_state)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best": [self.best_score_, self.best_epoch_],
            "should_stop": self.should_stop,
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
            "rng": _rng_state(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.run.checkpoint_path, buffer.getvalue())

    def _load_checkpoint(self) -> None:
        path = self.run.checkpoint_path
        if not path.exists():  # killed before its first epoch ended, or train.checkpoint: false
            log.info("no checkpoint in %s: starting from epoch 1", self.run.path)
            if self.dist.is_main:
                self.run.truncate_metrics(0)
            return
        # weights_only: the restricted unpickler (tensors and plain containers), never arbitrary code.
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best_score_, self.best_epoch_ = state["best"]
        self.should_stop = state["should_stop"]
        for cb in self.callbacks:
            cb.load_state_dict(state["callbacks"].get(type(cb).__name__, {}))
        _set_rng_state(state["rng"])
        self.history = self.run.read_metrics()[: self.epoch]
        if self.dist.is_main:
            self.run.truncate_metrics(self.epoch)
        log.info("resumed %s after epoch %d", self.run.path, self.epoch)

    # ------------------------------------------------------------------ construction
    def _loader(self, dataset: Dataset, shuffle: bool, weights: Sequence[float] | None = None
                ) -> tuple[DataLoader, Sampler | None, torch.Generator]:
        generator = torch.Generator()
        sampler: Sampler | None = None
        if weights is not None:
            if len(weights) != len(dataset):
                raise DlforgeError(f"{len(weights)} sample weights for {len(dataset)} training examples")
            sampler = WeightedSampler(weights, self.config.seed, self.dist.rank, self.dist.world_size)
        elif self.dist.enabled:
            sampler = DistributedSampler(dataset, shuffle=shuffle, seed=self.config.seed)
        loader = DataLoader(dataset, batch_size=self.config.batch_size, shuffle=shuffle and sampler is None,
                            sampler=sampler, generator=generator, num_workers=self.config.num_workers,
                            pin_memory=self.device.type == "cuda", collate_fn=getattr(dataset, "collate", None))
        return loader, sampler, generator

    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optimizer
        # No weight decay on biases and normalisation weights (1-D tensors).
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if o.name == "sgd":
            return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
        return torch.optim.AdamW(groups, lr=o.lr)

    def _scheduler(self) -> torch.optim.lr_scheduler.LRScheduler | None:
        cfg = self.config
        total = cfg.epochs * math.ceil(self.num_batches / cfg.accumulate_grad_batches)  # optimizer steps
        if cfg.scheduler == "onecycle":
            if cfg.warmup:
                raise DlforgeError("train.warmup: onecycle has its own warm-up; set train.warmup: 0")
            return torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=cfg.optimizer.lr, total_steps=total)
        warmup = round(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)
        if warmup >= total:
            raise DlforgeError(f"train.warmup: {cfg.warmup:g} is {warmup} of the run's {total} optimizer steps; "
                               "warm-up must end before training does")
        if cfg.scheduler == "none" and not warmup:
            return None
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(lr_factor, shape=cfg.scheduler, warmup=warmup, total=total))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)


class WeightedSampler(Sampler[int]):
    """Each epoch, as many indices as there are examples, drawn with replacement in proportion to `weights`: in
    expectation the gradient of the weighted loss, for every task's loss as it is. The draw depends on (seed, epoch)
    alone (exact resume); under DDP every rank draws the same sequence and takes every world-th index from its rank."""

    def __init__(self, weights: Sequence[float], seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        if len(self.weights) == 0 or not torch.isfinite(self.weights).all() or (self.weights < 0).any() \
                or self.weights.sum() <= 0:
            raise DlforgeError("sample weights must be finite, non-negative and not all zero")
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.per_rank = math.ceil(len(self.weights) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.per_rank * self.world_size, replacement=True,
                                  generator=generator)
        return iter(drawn[self.rank::self.world_size].tolist())


def lr_factor(step: int, shape: str, warmup: int, total: int) -> float:
    """The learning rate at optimizer step `step` as a fraction of the peak: a linear warm-up from 0 over
    `warmup` steps, then constant (`none`), linear decay to 0 (`linear`) or a half cosine to 0 (`cosine`)."""
    if step < warmup:
        return step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if shape == "linear":
        return max(0.0, 1.0 - progress)
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return 1.0


def _batch_len(batch: Any) -> int:
    first = batch[0] if isinstance(batch, list | tuple) else batch
    if isinstance(first, dict):  # named inputs, e.g. {"input_ids": (B, T), "attention_mask": (B, T)}
        first = next(iter(first.values()))
    return len(first)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
            "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
