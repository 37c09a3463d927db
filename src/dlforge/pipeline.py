"""From a spec to a finished run directory: prepare, fit, save, evaluate, report, mark complete."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import threading
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

from safetensors.torch import save_model

from dlforge._io import atomic_write
from dlforge.devices import seed_everything
from dlforge.errors import RunError
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


class Terminated(KeyboardInterrupt):
    """SIGTERM during training (Kubernetes evicting a pod, `kill`, `timeout`): stopped as Ctrl-C stops it."""


def train(spec: SpecBase, runs_dir: str | os.PathLike = "runs", resume: Run | None = None,
          progress: bool | None = None) -> Run:
    """Train `spec` into a new run directory (or finish the stopped run `resume`). The data is read and checked
    first: a wrong path, a missing column or a corrupt file stops before any run directory is made.

    Stopped by Ctrl-C or SIGTERM (`Terminated`), the run is marked FAILED ("interrupted", "terminated") and keeps
    the checkpoint of its last finished epoch, from which `dlforge train --resume RUN` goes on. A file that cannot be
    written (a full disk, a read-only folder) is a RunError naming it; the last good checkpoint stays."""
    with _sigterm_interrupts():
        return _train(spec, runs_dir, resume, progress)


def _train(spec: SpecBase, runs_dir: str | os.PathLike, run: Run | None, progress: bool | None) -> Run:
    main = int(os.environ.get("RANK", "0")) == 0
    resume = run is not None
    try:
        task, prepared, meta, weights = _prepare(spec)
        if main:
            run = run or Run.create(runs_dir, spec.name)
            run.write_spec(spec)
            run.mark_running()
            run.write_meta(meta)  # now: a stopped or failed run shows what it was, and can be resumed
        trainer = Trainer(spec.train, callbacks_from_spec(spec.train), run=run, progress=progress)
        trainer.fit(task, prepared.model, prepared.train, prepared.val, meta, resume=resume,
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
        stopped = "terminated" if isinstance(e, Terminated) else "interrupted" if isinstance(e, KeyboardInterrupt) \
            else None
        # A full disk, a read-only or foreign folder: one line naming the file (atomic writes name the file, not
        # their temporary one), not a traceback through the trainer.
        disk = f"{e.filename}: {e.strerror or e}" if isinstance(e, OSError) and e.filename else None
        resume_with = ""
        if main and run is not None:
            try:
                run.mark_failed(stopped or disk or f"{type(e).__name__}: {e}")
            except OSError:  # the disk that failed the run may fail its marker too: the first error is the one told
                log.debug("cannot mark %s failed", run.path, exc_info=True)
            kept = "the checkpoint of its last finished epoch is kept; " if run.checkpoint_path.exists() else ""
            resume_with = f"{kept}resume it with: dlforge train --resume {run.path}"
        if disk:
            raise RunError(disk + (f" ({resume_with})" if resume_with else "")) from None
        if stopped and resume_with:
            log.warning("%s: %s; %s", run.path, stopped, resume_with)
        raise


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises `Terminated` meanwhile (by default it ends Python at once: no FAILED marker, no message), once:
    a second one while stopping is ignored. Only in the main thread (the only one a handler can be set in) and where
    no one else handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
