"""The Task interface: everything one problem type knows, and nothing about loops or devices.

A task builds its data and model from the spec, defines its loss, step and metrics, turns raw
input into tensors (`preprocess`) and outputs into JSON-able predictions (`postprocess`),
evaluates a Predictor and contributes report sections. The Trainer, Predictor, evaluation and
report call only these methods, so adding a task is adding one file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import Dataset

from dlforge.errors import DlforgeError
from dlforge.spec import SpecBase, StrictModel

S = TypeVar("S", bound=StrictModel)

if TYPE_CHECKING:
    import pandas as pd
    from torchmetrics import MetricCollection

    from dlforge.predictor import Predictor
    from dlforge.report.html import Section
    from dlforge.run import Run
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


@dataclass
class ExplainTarget:
    """What an explanation attributes (`dlforge.explain`): `score` maps `Task.forward`'s outputs for a batch to one
    differentiable number per item, (B,); `about` says what that number is, JSON-able (a class, a box, a quantile)."""

    about: dict[str, Any]
    score: Callable[[Any], torch.Tensor]


class Task:
    spec_class: ClassVar[type[SpecBase]]
    default_monitor: ClassVar[str] = "val/loss"
    # Keyword options of a prediction (thresholds, horizon, generation length): `forward` and `postprocess`
    # both receive them and each uses its own.
    prediction_options: ClassVar[tuple[str, ...]] = ()
    # The exported graph's outputs, and the axes of its inputs that vary besides the batch (axis 0, always
    # dynamic), e.g. {"input_ids": {1: "tokens"}}.
    graph_outputs: ClassVar[tuple[str, ...]] = ("output",)
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {}
    export_hint: ClassVar[str] = ""  # when a model does not export: which ones do, or what to do instead
    # How one JSON instance becomes a raw item (images, texts, series): the server decodes with it.
    wire: ClassVar[Wire]
    # Whether training writes a reference profile for drift monitoring (the wire's input statistics, the model's
    # embeddings, its predictions) of `profile_items(test items)`.
    profiled: ClassVar[bool] = True

    def __init__(self, spec: SpecBase) -> None:
        self.spec = spec

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

    def example_inputs(self, meta: dict[str, Any], batch: int = 2) -> dict[str, torch.Tensor]:
        """A batch of the graph's inputs, in the order its `forward` takes them and named as the exported file's
        inputs, made by `preprocess` from synthetic raw items: what export traces with and checks against."""
        raise DlforgeError(f"{meta['task']} models cannot be exported")

    def forward(self, graph: nn.Module, inputs: Any, meta: dict[str, Any], **options: Any
                ) -> torch.Tensor | list[Any]:
        """Inference on one preprocessed batch through `graph` (the torch graph, or an exported stand-in that
        takes and returns the same tensors): a (B, ...) tensor, or one output per item."""
        return graph(inputs).float()

    def postprocess(self, outputs: Any, meta: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
        """Outputs -> one JSON-able prediction per item; `options` are named in `prediction_options`."""
        raise NotImplementedError

    def annotate(self, item: Any, prediction: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """Pictures of one prediction: {suffix: uint8 (H, W, 3) array or PIL image}, for `--save-images`."""
        raise DlforgeError(f"{type(self).__name__} cannot draw its predictions")

    def input_statistics(self, items: Sequence[Any], meta: dict[str, Any]) -> pd.DataFrame:
        """Per-item input statistics for drift monitoring: the wire's, by default."""
        return self.wire.statistics(list(items), meta)

    def profile_items(self, items: Sequence[Any], meta: dict[str, Any]) -> Sequence[Any]:
        """The items a drift profile describes, made from evaluation or logged items: by default the items."""
        return items

    # ------------------------------------------------------------ evaluation and report
    def evaluation_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any]:
        """(items, targets): the run's own test split, or all of `source`."""
        raise NotImplementedError

    def evaluate(self, predictor: Predictor, items: Sequence[Any], targets: Any, plots: Path) -> dict[str, Any]:
        """Metrics as a JSON-able dict (with a `headline` entry); figures written under `plots`."""
        raise NotImplementedError

    def report_sections(self, run: Run) -> list[Section]:
        return []

    # ------------------------------------------------------------ explanation (dlforge.explain)
    # The entries of `preprocess`'s dict that explanations attribute to (float tensors directly, integer ids through
    # the model's embedding layer); empty: `preprocess` returns one tensor, attributed whole.
    explained_inputs: ClassVar[tuple[str, ...]] = ()
    explain_method: ClassVar[str | None] = None  # the default method; None: the first its input kind offers

    def explain_target(self, outputs: Any, meta: dict[str, Any], target: str | None = None, box: int | None = None,
                       **options: Any) -> ExplainTarget:
        """The score to explain, chosen from one item's `forward` outputs: for `target` (a class, a quantile; None:
        what the model predicts) and `box` (one detected object); `options` are prediction options."""
        raise DlforgeError(f"{meta['task']} models cannot be explained")

    def feature_names(self, meta: dict[str, Any]) -> dict[str, list[str]]:
        """Names along the last axis of each explained input (covariates, columns), for pictures and JSON."""
        return {}

    # ------------------------------------------------------------ fairness audit (dlforge.fairness)
    def audit_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any, Any]:
        """(items, targets, columns): `evaluation_data(meta, source)` and, aligned with its items, the columns the data
        carries (a pandas DataFrame, e.g. the groups an audit compares), or None. By default the items' own keys where
        the items are dicts (table rows); tasks whose items are not (texts) read the columns beside them."""
        import pandas as pd

        items, targets = self.evaluation_data(meta, source)
        if len(items) and all(isinstance(item, dict) for item in items):
            return items, targets, pd.DataFrame.from_records(list(items))
        return items, targets, None


def prediction_settings(spec: type[S], meta: dict[str, Any], options: dict[str, Any]) -> S:
    """The spec's `predict:` defaults (kept in meta) with a call's `options` over them, validated: a bad value
    is a DlforgeError naming the option."""
    try:
        return spec(**{**meta["predict"], **options})
    except ValidationError as e:
        err = e.errors()[0]
        raise DlforgeError(f"prediction option {err['loc'][0]}={err['input']!r}: {err['msg']}") from None
