"""Training a spec the way `dlforge train` does (its task's data and model, the Trainer with the spec's callbacks,
the task's calibration) but without a run directory: for labs that train many variants and only need the test
split's outputs, not the report and drift profile each run directory would get."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlforge.spec import SpecBase

log = logging.getLogger("dlforge")


@dataclass
class Fitted:
    spec: SpecBase
    model: torch.nn.Module
    meta: dict[str, Any]  # the task's metadata, with the calibration (temperature) the pipeline would save
    history: list[dict[str, Any]]  # the Trainer's per-epoch rows
    logits: torch.Tensor  # (N, K) on the test split, float32, before temperature scaling
    targets: np.ndarray  # (N,)
    seconds: float

    @property
    def accuracy(self) -> float:
        return float((self.logits.argmax(1).numpy() == self.targets).mean())


def fit(spec: SpecBase) -> Fitted:
    """Prepare, train and calibrate `spec` as the pipeline does; the test split's logits through a Predictor."""
    import dlforge.tasks  # noqa: F401  (registers the tasks)
    from dlforge.devices import seed_everything
    from dlforge.pipeline import callbacks_from_spec
    from dlforge.predictor import Predictor
    from dlforge.registry import TASKS
    from dlforge.training.trainer import Trainer

    started = time.perf_counter()
    seed_everything(spec.train.seed)
    task = TASKS.get(spec.task)(spec)
    prepared = task.prepare()
    trainer = Trainer(spec.train, callbacks_from_spec(spec.train), progress=False)
    trainer.fit(task, prepared.model, prepared.train, prepared.val, prepared.meta)
    meta = {"task": spec.task, **prepared.meta}
    meta.update(task.calibrate(prepared.model, prepared.val, meta))
    items, targets = prepared.test
    logits = Predictor(task, prepared.model, meta, device=trainer.device).outputs(items)
    return Fitted(spec, prepared.model, meta, trainer.history, logits.float(), np.asarray(targets),
                  time.perf_counter() - started)
