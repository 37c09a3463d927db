"""What a task can do besides its core (`Task`: data, model, loss, step, metrics, pre/forward/postprocess, evaluate).

A task declares a capability by inheriting it; downstream code asks whether the run's task has one
(`predictor.capability(Exportable)`, or `isinstance(task, Exportable)` where it holds the task), never which
task it is. A task that declines a capability it would otherwise have says why in `Task.declined`.

    Exportable   its graph exports (ONNX, TorchScript, torch.export)      dlforge export, --backend onnx
    Explainable  a score per item to attribute, and its inputs' names     dlforge explain, POST /explain
    Profiled     input statistics and items for a drift reference         training's profile, dlforge monitor
    Auditable    calibrated class probabilities and the data's columns    dlforge audit, group thresholds
    Annotated    pictures of a prediction                                 dlforge predict --save-images
    Reported     its own sections of report.html                          the report
    ForecastsAhead  items past the end of its data                        dlforge forecast
    Tokenized    a tokenizer among its assets                             text explanations, the attention lab
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from dlforge.errors import DlforgeError

if TYPE_CHECKING:
    import pandas as pd

    from dlforge.pages import Section
    from dlforge.run import Run


class Capability:
    """A role a task may take on. `action` completes "<task> models cannot be ..." when a task lacks it."""

    action: ClassVar[str] = "used this way"


C = TypeVar("C", bound=Capability)


def require(task: Any, capability: type[C]) -> C:
    """`task` as `capability`, or a DlforgeError saying that its models cannot be used that way, and why."""
    if isinstance(task, capability):
        return task
    reason = getattr(task, "declined", {}).get(capability)
    raise DlforgeError(f"{task.spec.task} models cannot be {capability.action}" + (f": {reason}" if reason else ""))


class Exportable(Capability):
    action = "exported"
    # The exported graph's outputs, and the axes of its inputs that vary besides the batch (axis 0, always
    # dynamic), e.g. {"input_ids": {1: "tokens"}}.
    graph_outputs: ClassVar[tuple[str, ...]] = ("output",)
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {}
    export_hint: ClassVar[str] = ""  # when one of the task's models does not export: which ones do

    def example_inputs(self, meta: dict[str, Any], batch: int = 2) -> dict[str, torch.Tensor]:
        """A batch of the graph's inputs, in the order its `forward` takes them and named as the exported file's
        inputs, made by `preprocess` from synthetic raw items: what export traces with and checks against."""
        raise NotImplementedError


@dataclass
class ExplainTarget:
    """What an explanation attributes (`dlforge.explain`): `score` maps `Task.forward`'s outputs for a batch to one
    differentiable number per item, (B,); `about` says what that number is, JSON-able (a class, a box, a quantile)."""

    about: dict[str, Any]
    score: Callable[[Any], torch.Tensor]


class Explainable(Capability):
    action = "explained"
    # The entries of `preprocess`'s dict that explanations attribute to (float tensors directly, integer ids through
    # the model's embedding layer); empty: `preprocess` returns one tensor, attributed whole.
    explained_inputs: ClassVar[tuple[str, ...]] = ()
    explain_method: ClassVar[str | None] = None  # the default method; None: the first its input kind offers

    def explain_target(self, outputs: Any, meta: dict[str, Any], target: str | None = None, box: int | None = None,
                       **options: Any) -> ExplainTarget:
        """The score to explain, chosen from one item's `forward` outputs: for `target` (a class, a quantile; None:
        what the model predicts) and `box` (one detected object); `options` are prediction options."""
        raise NotImplementedError

    def feature_names(self, meta: dict[str, Any]) -> dict[str, list[str]]:
        """Names along the last axis of each explained input (covariates, columns), for pictures and JSON."""
        return {}


class Profiled(Capability):
    """Training writes a reference profile for drift monitoring (the wire's input statistics, the model's
    embeddings, its predictions) of `profile_items(test items)`."""

    action = "profiled for drift"

    def input_statistics(self, items: Sequence[Any], meta: dict[str, Any]) -> pd.DataFrame:
        """Per-item input statistics for drift monitoring: the wire's, by default."""
        return self.wire.statistics(list(items), meta)  # type: ignore[attr-defined]  (Task.wire)

    def profile_items(self, items: Sequence[Any], meta: dict[str, Any]) -> Sequence[Any]:
        """The items a drift profile describes, made from evaluation or logged items: by default the items."""
        return items


class Auditable(Capability):
    action = "audited for fairness (it needs class probabilities)"

    def probabilities(self, outputs: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
        """(B, K) outputs -> calibrated class probabilities."""
        raise NotImplementedError

    def audit_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any, Any]:
        """(items, targets, columns): `evaluation_data(meta, source)` and, aligned with its items, the columns the data
        carries (a pandas DataFrame, e.g. the groups an audit compares), or None. By default the items' own keys where
        the items are dicts (table rows); tasks whose items are not (texts) read the columns beside them."""
        import pandas as pd

        items, targets = self.evaluation_data(meta, source)  # type: ignore[attr-defined]  (Task.evaluation_data)
        if len(items) and all(isinstance(item, dict) for item in items):
            return items, targets, pd.DataFrame.from_records(list(items))
        return items, targets, None


class Annotated(Capability):
    action = "drawn"

    def annotate(self, item: Any, prediction: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """Pictures of one prediction: {suffix: uint8 (H, W, 3) array or PIL image}, for `--save-images`."""
        raise NotImplementedError


class Reported(Capability):
    action = "reported"

    def report_sections(self, run: Run) -> list[Section]:
        """The task's own sections of the run's report.html (evaluation tables and figures)."""
        raise NotImplementedError


class ForecastsAhead(Capability):
    action = "asked for forecasts past the end of their data (dlforge forecast needs a forecasting run)"

    def future_items(self, meta: dict[str, Any], data: str | None = None, future: str | None = None) -> list[Any]:
        """One item per series of `data` (default: the run's own data), ready to forecast past its end; `future` is
        a table of the known-future covariates (timestamp, series_id, columns) of the steps ahead."""
        raise NotImplementedError


class Tokenized(Capability):
    """Text tasks: `tokenizer_` is set in `prepare` (from the spec) or `load_assets` (from a run)."""

    action = "tokenized"
    tokenizer_: Any

    @property
    def tokenizer(self) -> Any:
        """The run's tokenizer (a transformers PreTrainedTokenizer)."""
        return self.tokenizer_
