"""The Predictor: a finished run's model behind one call. Serve, predict, evaluate, explain,
audit, export and monitor all go through it; none rebuilds a model its own way.

It is the whole seam downstream of training: its public surface offers what the task does at inference (the wire,
prediction options, pre/forward/postprocess, evaluation data, the tokenizer), and `capability(...)` offers what a
task can do besides (`dlforge.tasks.capabilities`: export, explanation, drift profile, audit, pictures). Nothing
downstream reaches into `predictor.task`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from safetensors.torch import load_model
from torch import nn

from dlforge.devices import select_device, to_device
from dlforge.errors import DlforgeError
from dlforge.registry import TASKS
from dlforge.run import Run
from dlforge.tasks.base import Task
from dlforge.tasks.capabilities import C, Tokenized, require
from dlforge.tasks.thresholds import GroupThresholds

if TYPE_CHECKING:
    from dlforge.spec import SpecBase
    from dlforge.wire import Wire

Backend = Literal["torch", "onnx"]


class NoEmbedding(DlforgeError):
    """The model has no layer that sees one vector per item (dense heads, per-step decoders)."""


class Predictor:
    """A task, its run's metadata and the graph that inference runs through: the torch graph of `model`
    (`task.graph`), or an exported stand-in taking and returning the same tensors (then `model` is None)."""

    def __init__(self, task: Task, model: nn.Module | None, meta: dict[str, Any], device: str | torch.device = "cpu",
                 batch_size: int = 64, graph: Callable[..., Any] | None = None) -> None:
        self.task = task
        self.meta = meta
        self.device = torch.device(device)
        self.model = model.to(self.device).eval() if model is not None else None
        self.graph = graph if graph is not None else task.graph(self.model, meta)
        self.backend = getattr(self.graph, "backend", "torch")
        self.batch_size = batch_size
        # Group-specific decision thresholds (`dlforge audit --mitigate threshold`), applied by `predict`; a run's
        # own are loaded by `from_run`. None: the model decides alone.
        self.thresholds: GroupThresholds | None = None

    @classmethod
    def from_run(cls, run: str | os.PathLike | Run, device: str = "cpu", complete: bool = True,
                 backend: Backend = "torch") -> Predictor:
        """The Predictor of a run. backend "onnx" runs the graph with onnxruntime on the CPU, from
        `<run>/export/model.onnx` (a RunError when it is missing or stale: `dlforge.load` exports first); the task's
        pre- and post-processing stay in torch."""
        run = run if isinstance(run, Run) else Run.open(run, complete=complete)
        spec, meta = run.read_spec(), run.read_meta()
        task = TASKS.get(spec.task)(spec)
        task.load_assets(run.path / "assets")
        if backend == "onnx":
            if device not in ("cpu", "auto"):
                raise DlforgeError(f"backend onnx runs on the CPU (onnxruntime); device {device!r} needs the torch "
                                   "backend")
            from dlforge.onnx_backend import onnx_graph  # onnxruntime: only when asked for

            predictor = cls(task, None, meta, "cpu", graph=onnx_graph(run))
        elif backend != "torch":
            raise DlforgeError(f"backend {backend!r}: choose torch or onnx")
        else:
            model = task.build_model(meta)
            load_model(model, run.weights_path)
            predictor = cls(task, model, meta, select_device(device))
        predictor.thresholds = GroupThresholds.load(run.path)
        return predictor

    def with_model(self, model: nn.Module) -> Predictor:
        """The same run's Predictor around other weights (a randomised copy, a fine-tuned one)."""
        return Predictor(self.task, model, self.meta, self.device, self.batch_size)

    # ------------------------------------------------------------ what the run's task offers
    @property
    def classes(self) -> list[str] | None:
        return self.meta.get("classes")

    @property
    def spec(self) -> SpecBase:
        """The run's resolved spec."""
        return self.task.spec

    @property
    def wire(self) -> Wire:
        """How one JSON instance becomes a raw item, and back."""
        return self.task.wire

    @property
    def prediction_options(self) -> tuple[str, ...]:
        """The keyword options `predict` takes (thresholds, horizon, generation length), named by the task."""
        return self.task.prediction_options

    @property
    def tokenizer(self) -> Any:
        """The run's tokenizer, for text models; None for others."""
        return self.task.tokenizer if isinstance(self.task, Tokenized) else None

    def capability(self, capability: type[C]) -> C:
        """The run's task as `capability` (e.g. `Exportable`), or a DlforgeError saying its models cannot be used so."""
        return require(self.task, capability)

    def can(self, capability: type[C]) -> bool:
        return isinstance(self.task, capability)

    def evaluation_data(self, source: str | None = None) -> tuple[Sequence[Any], Any]:
        """(items, targets): the run's own test split, or all of `source`."""
        return self.task.evaluation_data(self.meta, source)

    def evaluate(self, items: Sequence[Any], targets: Any, plots: Path) -> dict[str, Any]:
        """The task's metrics of these items (with a `headline` entry); figures written under `plots`."""
        return self.task.evaluate(self, items, targets, plots)

    # ------------------------------------------------------------ inference, step by step
    def preprocess(self, items: Sequence[Any]) -> Any:
        """Raw items -> the graph's batched input, on the Predictor's device."""
        return to_device(self.task.preprocess(items, self.meta), self.device)

    def forward(self, inputs: Any, **options: Any) -> torch.Tensor | list[Any]:
        """The graph's outputs for one preprocessed batch (differentiable: no inference mode here)."""
        return self.task.forward(self.graph, inputs, self.meta, **options)

    def postprocess(self, outputs: Any, **options: Any) -> list[dict[str, Any]]:
        """Outputs -> one JSON-able prediction per item (without group thresholds: `predict` applies those)."""
        return self.task.postprocess(outputs, self.meta, **options)

    @torch.inference_mode()
    def outputs(self, items: Iterable[Any], **options: Any) -> torch.Tensor | list[Any]:
        """Raw model outputs for `items`, batched, on the CPU: a tensor (e.g. logits), or one output per item."""
        items = list(items)
        chunks = []
        for i in range(0, len(items), self.batch_size):
            inputs = self.preprocess(items[i:i + self.batch_size])
            chunks.append(to_device(self.forward(inputs, **options), torch.device("cpu")))
        if chunks and torch.is_tensor(chunks[0]):
            return torch.cat(chunks)
        return [out for chunk in chunks for out in chunk]

    def embeddings(self, items: Sequence[Any], predict: bool = False
                   ) -> np.ndarray | tuple[np.ndarray, list[dict[str, Any]]]:
        """(N, D): each item as the model's last linear layer (its head) sees it, the penultimate representation
        drift monitoring and explanations compare. Read with a forward hook, so no model needs a method for it.
        With `predict`, also the predictions of the same forward pass: (embeddings, predictions)."""
        if self.model is None:
            raise DlforgeError("embeddings need the torch backend (the ONNX graph ends at its outputs)")
        head = next((m for m in reversed(list(self.model.modules())) if isinstance(m, nn.Linear)), None)
        if head is None:
            raise NoEmbedding(f"{self.meta['task']} model {self.meta.get('model')} has no linear head to embed with")
        seen: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().float().cpu()))
        try:
            predictions = self.predict(items) if predict else self.outputs(items)
        finally:
            hook.remove()
        embedded = torch.cat([x.reshape(len(x), -1) for x in seen]) if seen else torch.zeros(0, head.in_features)
        if len(embedded) != len(items):  # the head runs per region or per token: no one vector per item
            raise NoEmbedding(f"{self.meta['task']} model {self.meta.get('model')}: its last linear layer does not "
                              "see one vector per item")
        return (embedded.numpy(), predictions) if predict else embedded.numpy()

    def predict(self, items: Sequence[Any], **options: Any) -> list[dict[str, Any]]:
        """One JSON-able prediction per item. A numpy array is a batch along its first axis.

        `options` are the task's `prediction_options`, e.g. `conf` and `iou` for detection.
        """
        unknown = sorted(set(options) - set(self.prediction_options))
        if unknown:
            allowed = ", ".join(self.prediction_options) or "none"
            raise DlforgeError(f"{self.meta['task']} predictions take no option {', '.join(unknown)} "
                               f"(options: {allowed})")
        outputs = self.outputs(items, **options)
        predictions = self.postprocess(outputs, **options)
        if self.thresholds is not None:  # one decision per group's thresholds, the same for the same input
            predictions = self.thresholds.apply(self.task, self.meta, list(items), outputs, predictions)
        return predictions

