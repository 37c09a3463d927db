"""The Task interface: everything one problem type knows, and nothing about loops or devices.

The core every task has: it builds its data and model from the spec, defines its loss, step and
metrics, turns raw input into tensors (`preprocess`) and outputs into JSON-able predictions
(`postprocess`), and evaluates a Predictor. The Trainer, Predictor and evaluation call only these.
What else a task can do (export, explanation, drift profile, fairness audit, pictures, report
sections) it declares by inheriting capabilities (`dlforge.tasks.capabilities`). Adding a task
is adding one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import Dataset

from dlforge.errors import DlforgeError
from dlforge.run_meta import RunMeta
from dlforge.spec import SpecBase, StrictModel
from dlforge.tasks.capabilities import Capability, ExplainTarget  # noqa: F401  (ExplainTarget: re-exported)

S = TypeVar("S", bound=StrictModel)

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

    from dlforge.wire import Wire


@dataclass
class Prepared:
    """What training starts from: a model (pretrained weights loaded), datasets, and metadata."""

    model: nn.Module
    train: Dataset
    val: Dataset
    test: tuple[Sequence[Any], Any] | None  # raw (items, targets): evaluated through a Predictor
    meta: dict[str, Any]  # JSON-able: labels, preprocessing, sizes; enough to rebuild the model
    # The training rows' own columns (model inputs or not, e.g. groups kept out of the model) as a pandas DataFrame,
    # and their class indices, aligned with `train`: what fairness reweighing (train.fairness.reweigh) reads. None:
    # the task's data carries no such columns.
    train_columns: tuple[Any, Any] | None = None


class Inference(Protocol):
    """What `Task.evaluate` uses of the Predictor (`dlforge.predictor`, a layer above the tasks, which satisfies
    this): the run's metadata, its model where it runs in torch, and batched inference."""

    meta: dict[str, Any]
    model: nn.Module | None
    device: torch.device
    batch_size: int

    def outputs(self, items: Iterable[Any], **options: Any) -> torch.Tensor | list[Any]: ...

    def predict(self, items: Sequence[Any], **options: Any) -> list[dict[str, Any]]: ...


class Task:
    spec_class: ClassVar[type[SpecBase]]
    # What its runs' meta.json holds: a task whose meta has keys of its own declares a RunMeta subclass.
    meta_class: ClassVar[type[RunMeta]] = RunMeta
    default_monitor: ClassVar[str] = "val/loss"
    # Keyword options of a prediction (thresholds, horizon, generation length): `forward` and `postprocess`
    # both receive them and each uses its own.
    prediction_options: ClassVar[tuple[str, ...]] = ()
    # How one JSON instance becomes a raw item (images, texts, series): the server decodes with it.
    wire: ClassVar[Wire]
    # Capabilities (`dlforge.tasks.capabilities`) this task declines although its base class offers them: the reason,
    # which completes "<task> models cannot be <action>: ...".
    declined: ClassVar[dict[type[Capability], str]] = {}

    def __init__(self, spec: SpecBase) -> None:
        self.spec = spec

    @classmethod
    def example_spec(cls, folder: Path) -> dict[str, Any]:
        """A small spec of this task (a dict, as a YAML file reads) that trains for one epoch in seconds on built-in
        data or on data it writes under `folder`, with nothing downloaded: what the contract test over every task
        (tests/test_task_contract.py) trains, and a starting point for users. Every task defines it."""
        raise NotImplementedError(f"{cls.__name__} has no example_spec: every task must define one")

    # ------------------------------------------------------------ training
    def prepare(self) -> Prepared:
        """Read the data, build the model (with pretrained weights) and the datasets."""
        raise NotImplementedError

    def build_model(self, meta: dict[str, Any]) -> nn.Module:
        """The architecture alone, from `meta`: weights come from the run directory."""
        raise NotImplementedError

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, meta: dict[str, Any]) -> MetricCollection:
        """Validation metrics, updated with (outputs, targets) of each batch."""
        raise NotImplementedError

    def calibrate(self, model: nn.Module, val: Dataset, meta: dict[str, Any]) -> dict[str, Any]:
        """After training: what the trained model learns from the validation set (e.g. interval widths),
        as entries for `meta`. Nothing by default."""
        return {}

    def save_assets(self, directory: Path) -> None:
        """After training: files the model needs at inference besides its weights (a tokenizer), into
        `directory` (the run's `assets/`). Nothing by default."""

    def load_assets(self, directory: Path) -> None:
        """Read back what `save_assets` wrote, before a finished run's `build_model` and `preprocess`."""

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Any, Any]:
        """One forward pass: (loss, outputs, targets). Tasks with other batch shapes override it."""
        inputs, targets = batch
        outputs = model(inputs)
        return self.loss(outputs, targets), outputs, targets

    # ------------------------------------------------------------ inference
    def preprocess(self, items: Sequence[Any], meta: dict[str, Any]) -> Any:
        """Raw items -> the model's batched input (a tensor, or a dict of tensors)."""
        raise NotImplementedError

    def graph(self, model: nn.Module, meta: dict[str, Any]) -> nn.Module:
        """The tensor-in, tensor-out part of inference: what `forward` calls and what export writes. Default: the
        model."""
        return model

    def forward(self, graph: nn.Module, inputs: Any, meta: dict[str, Any], **options: Any
                ) -> torch.Tensor | list[Any]:
        """Inference on one preprocessed batch through `graph` (the torch graph, or an exported stand-in that
        takes and returns the same tensors): a (B, ...) tensor, or one output per item."""
        return graph(inputs).float()

    def postprocess(self, outputs: Any, meta: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
        """Outputs -> one JSON-able prediction per item; `options` are named in `prediction_options`."""
        raise NotImplementedError

    # ------------------------------------------------------------ evaluation and report
    def evaluation_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any]:
        """(items, targets): the run's own test split, or all of `source`."""
        raise NotImplementedError

    def evaluate(self, predictor: Inference, items: Sequence[Any], targets: Any, plots: Path) -> dict[str, Any]:
        """Metrics as a JSON-able dict (with a `headline` entry); figures written under `plots`."""
        raise NotImplementedError


def prediction_settings(spec: type[S], meta: dict[str, Any], options: dict[str, Any]) -> S:
    """The spec's `predict:` defaults (kept in meta) with a call's `options` over them, validated: a bad value
    is a DlforgeError naming the option."""
    try:
        return spec(**{**meta["predict"], **options})
    except ValidationError as e:
        err = e.errors()[0]
        raise DlforgeError(f"prediction option {err['loc'][0]}={err['input']!r}: {err['msg']}") from None


def significant(x: float) -> float:
    """A probability, confidence or pixel share as a prediction states it: 7 significant digits (float32's
    precision), so 0.9999 stays apart from 1 and 3e-9 from 0, which a fixed number of decimals rounds away."""
    return float(f"{x:.7g}")
