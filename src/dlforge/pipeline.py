"""From a spec to a finished run directory: prepare, fit, save, evaluate, report, mark complete."""

from __future__ import annotations

import logging
import os
import platform
from importlib.metadata import version
from typing import Any

from safetensors.torch import save_model

from dlforge._io import atomic_write
from dlforge.devices import seed_everything
from dlforge.predictor import Predictor
from dlforge.registry import TASKS
from dlforge.report.html import write_report
from dlforge.run import Run
from dlforge.spec import DataSpec, SpecBase, TrainSpec
from dlforge.tasks.base import Prepared, Task
from dlforge.tasks.capabilities import Profiled
from dlforge.training.callbacks import BackboneFreeze, Callback, EarlyStopping, GradientFlow
from dlforge.training.trainer import Trainer

log = logging.getLogger("dlforge")


def callbacks_from_spec(train: TrainSpec) -> list[Callback]:
    callbacks: list[Callback] = [GradientFlow(every=train.grad_flow_every)]
    if train.early_stopping is not None:
        callbacks.append(EarlyStopping(train.early_stopping.patience, train.early_stopping.min_delta))
    if train.freeze_backbone_epochs:
        callbacks.append(BackboneFreeze(train.freeze_backbone_epochs))
    return callbacks


def train(spec: SpecBase, runs_dir: str | os.PathLike = "runs", resume: Run | None = None,
          progress: bool | None = None) -> Run:
    """Train `spec` into a new run directory (or finish the stopped run `resume`). The data is read and checked
    first: a wrong path, a missing column or a corrupt file stops before any run directory is made."""
    main = int(os.environ.get("RANK", "0")) == 0
    run = resume
    try:
        task, prepared, meta, weights = _prepare(spec)
        if main:
            run = run or Run.create(runs_dir, spec.name)
            run.write_spec(spec)
            run.mark_running()
            run.write_meta(meta)  # now: a stopped or failed run shows what it was, and can be resumed
        trainer = Trainer(spec.train, callbacks_from_spec(spec.train), run=run, progress=progress)
        trainer.fit(task, prepared.model, prepared.train, prepared.val, meta, resume=resume is not None,
                    sample_weights=weights)
        if not trainer.dist.is_main:
            return run
        meta.update(device=str(trainer.device), world_size=trainer.dist.world_size, epochs=trainer.epoch,
                    best_epoch=trainer.best_epoch_)
        meta.update(task.calibrate(prepared.model, prepared.val, meta))
        task.save_assets(run.path / "assets")
        run.write_meta(meta)  # validated by the task's meta_class (RunMeta), stamped with the format version
        atomic_write(run.weights_path, lambda p: save_model(prepared.model.cpu(), str(p)))
        summary: dict[str, Any] = {"epochs": trainer.epoch, "best_epoch": trainer.best_epoch_}
        if prepared.test is not None and len(prepared.test[0]):
            predictor = Predictor(task, prepared.model, meta, device=trainer.device)
            result = {"data": "test split", **predictor.evaluate(*prepared.test, run.path / "plots")}
            run.write_eval(result)
            summary["headline"] = result["headline"]
            profiled = task.profile_items(prepared.test[0], meta) if isinstance(task, Profiled) else []
            if len(profiled) >= 2:
                from dlforge.drift.profile import build_profile, write_profile

                write_profile(run.path, *build_profile(predictor, profiled, metrics=result.get("metrics")))
        write_report(run, summary)  # the report of a complete run, written before its marker
        run.mark_complete(summary)  # last: only now does the run count as finished
        return run
    except BaseException as e:
        if main and run is not None:
            run.mark_failed("interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}")
        raise


def check_data(spec: SpecBase) -> dict[str, Any]:
    """Read and check `spec`'s data (and build its model) exactly as `train` does before it makes a run directory,
    and train nothing: the run's meta as training would start it (sizes, classes, what was skipped or dropped). A
    DataError names the first problem."""
    return _prepare(spec)[2]


def _prepare(spec: SpecBase) -> tuple[Task, Prepared, dict[str, Any], Any]:
    """The task, its data and model, the run's first meta, and fairness sample weights (or None)."""
    seed_everything(spec.train.seed)
    task = TASKS.get(spec.task)(spec)
    prepared = task.prepare()
    meta = {"task": spec.task, **prepared.meta, "versions": _versions()}
    data = getattr(spec, "data", None)
    if isinstance(data, DataSpec) and (data.limit or data.fraction):  # a quick run says so
        meta["data"] = {**(meta.get("data") or {}),
                        "subset": {"limit": data.limit} if data.limit else {"fraction": data.fraction}}
    weights = None
    if spec.train.fairness.reweigh:  # Kamiran-Calders: groups and label made independent by sample weights
        from dlforge.training.reweigh import reweigh

        weights, meta["fairness"] = reweigh(prepared, spec.train.fairness.reweigh, meta["classes"])
    return task, prepared, meta, weights


def _versions() -> dict[str, str]:
    names = ("dlforge", "torch", "torchvision", "timm", "torchmetrics", "numpy", "transformers", "peft")
    return {"python": platform.python_version(), **{n: version(n) for n in names}}
