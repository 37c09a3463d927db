"""One item made differentiable: the tensors an explanation attributes to, their baselines, and the score as a
function of them.

Nothing here knows a task. The task preprocesses the item, names the inputs to attribute (`explained_inputs`) and
turns its `forward` outputs into the score (`explain_target`). Float inputs are attributed as they are. Integer ids
(tokens, categories) are attributed through the embedding layers that read them, as Captum's
LayerIntegratedGradients does: a forward hook puts the attributed tensor in place of the layer's output, so every
method (and every check) sees floats, and numbers and categories share one integration path. A layer is matched to
the ids it reads by storage: it reads the ids tensor itself (one unit per token) or one column of it (one unit per
categorical column).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dlforge.errors import DlforgeError
from dlforge.predictor import Predictor
from dlforge.tasks.capabilities import Explainable, ExplainTarget


@dataclass
class Part:
    """One attributed tensor: (1, ...) float, with its baseline (what "absent" means: zeros for floats, the embedding
    of padding or of the unknown category for ids). `reduce` are the axes summed into one unit (an image's channels,
    an embedding's width): a unit is what a picture shows and what the deletion check removes."""

    name: str
    value: torch.Tensor
    baseline: torch.Tensor
    reduce: tuple[int, ...] = ()
    labels: list[str] | None = None  # one per unit along the last unit axis: features, tokens, a column
    spans: list[tuple[int, int]] | None = None  # tokens: character offsets into the text (0, 0 for special tokens)

    @property
    def unit_shape(self) -> tuple[int, ...]:
        return tuple(n for i, n in enumerate(self.value.shape) if i > 0 and i not in self.reduce)

    def units(self, attribution: torch.Tensor) -> np.ndarray:
        """(1, ...) attributions -> one number per unit (summed over `reduce`), without the batch axis."""
        a = attribution.detach().float()
        return (a.sum(dim=self.reduce) if self.reduce else a)[0].cpu().numpy()

    def moved(self) -> np.ndarray:
        """Per unit: whether the input differs from the baseline there (where it does not, every attribution that
        integrates along the path is 0 whatever the model: special tokens, say)."""
        differs = (self.value != self.baseline)
        return (differs.any(dim=self.reduce) if self.reduce else differs)[0].cpu().numpy()

    def masked(self, masks: torch.Tensor) -> torch.Tensor:
        """(n, *units) booleans, True = removed -> (n, ...) this input with those units at the baseline."""
        shape = [len(masks), *(1 if i in self.reduce else n for i, n in enumerate(self.value.shape) if i > 0)]
        m = masks.reshape(shape).to(self.value.device)
        return torch.where(m, self.baseline, self.value)


@dataclass
class Subject:
    predictor: Predictor
    target: ExplainTarget
    parts: list[Part]
    score: Callable[..., torch.Tensor]  # (*values with batch n) -> (n,)
    options: dict[str, Any] = field(default_factory=dict)
    background: Sequence[Any] | None = None  # raw items that model-agnostic methods (SHAP on rows) compare against
    info: dict[str, Any] = field(default_factory=dict)  # what a method reports of itself (IG: its steps)

    @property
    def inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.value for p in self.parts)

    @property
    def baselines(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.baseline for p in self.parts)

    def scores(self, *values: torch.Tensor, chunk: int = 32) -> np.ndarray:
        """`score` without gradients, `chunk` rows at a time: (n,)."""
        with torch.no_grad():
            return torch.cat([self.score(*(v[i:i + chunk] for v in values)).float().cpu()
                              for i in range(0, len(values[0]), chunk)]).numpy()

    def score_items(self, items: Sequence[Any], chunk: int = 32) -> np.ndarray:
        """The score of raw items (what LIME and SHAP perturb): (n,)."""
        p = self.predictor
        out = []
        with torch.no_grad():
            for i in range(0, len(items), chunk):
                inputs = p.preprocess(list(items[i:i + chunk]))
                out.append(self.target.score(p.forward(inputs, **self.options)).float().cpu())
        return torch.cat(out).numpy()


def resolve_target(predictor: Predictor, item: Any, target: str | None, box: int | None,
                   options: dict[str, Any]) -> ExplainTarget:
    """The task's choice of what to explain for `item` (its prediction unless `target` / `box` say otherwise)."""
    p = predictor
    with torch.no_grad():
        outputs = p.forward(p.preprocess([item]), **options)
    return p.capability(Explainable).explain_target(outputs, p.meta, target, box, **options)


def subject(predictor: Predictor, item: Any, target: ExplainTarget, options: dict[str, Any]) -> Subject:
    p = predictor
    if p.model is None:
        raise DlforgeError("explanations need the torch backend: gradients flow through the PyTorch model")
    task, meta = p.capability(Explainable), p.meta
    inputs = p.preprocess([item])
    values = {name: inputs if name is None else inputs[name] for name in task.explained_inputs or (None,)}
    for name, value in values.items():
        if not torch.is_tensor(value):
            raise DlforgeError(f"{meta['task']}: input {name} is not one tensor (tiled images?): it cannot be "
                               "explained")
    features = task.feature_names(meta)
    floats = {name: v for name, v in values.items() if v.is_floating_point() and v.numel()}
    ids = {name: v for name, v in values.items() if not v.is_floating_point()}
    parts = [Part(name or "input", v.float(), torch.zeros_like(v, dtype=torch.float32),
                  reduce=(1,) if v.dim() == 4 else (), labels=features.get(name or "input"))
             for name, v in floats.items()]
    layers = _embedded(p, inputs, ids, features, item) if ids else []
    parts += [part for _, part in layers]

    def score(*xs: torch.Tensor) -> torch.Tensor:
        given = dict(zip(floats, xs, strict=False))
        full = given[None] if None in given else {**_repeat(inputs, len(xs[0])), **given}
        with _replaced({layer: x for (layer, _), x in zip(layers, xs[len(floats):], strict=True)}):
            return target.score(p.forward(full, **options)).float()

    return Subject(p, target, parts, score, options)


# ---------------------------------------------------------------- ids through their embedding layers


def _embedded(p: Predictor, inputs: Any, ids: dict[str, torch.Tensor], features: dict[str, list[str]], item: Any
              ) -> list[tuple[nn.Module, Part]]:
    """For each embedding layer that reads an id input: the layer, and its output as a Part (baseline: the output for
    the baseline ids)."""
    baseline_ids = {name: _baseline_ids(p, v) for name, v in ids.items()}
    seen = _embedding_calls(p, inputs)
    base = _embedding_calls(p, {**inputs, **baseline_ids})
    found = []
    for name, v in ids.items():
        for layer, (read, out) in seen.items():
            where = _reads(read, v)
            if where is None:
                continue
            if where == "all":  # tokens: one unit per position
                part = Part(name, out, base[layer][1], reduce=(2,), labels=_tokens(p, v), spans=_spans(p, v, item))
            else:  # one categorical column
                labels = features.get(name)
                part = Part(f"{name}/{labels[where] if labels else where}", out, base[layer][1], reduce=(1,),
                            labels=[labels[where] if labels else str(where)])
            found.append((layer, part))
        if not any(_reads(read, v) is not None for read, _ in seen.values()):
            raise DlforgeError(f"{p.meta['task']}: no embedding layer of the model reads input {name!r}")
    return found


def _embedding_calls(p: Predictor, inputs: Any) -> dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """Each nn.Embedding's input and output (its first call) in one forward pass of `inputs`."""
    seen: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(layer: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        seen.setdefault(layer, (args[0], out.detach()))

    hooks = [m.register_forward_hook(record) for m in p.model.modules() if isinstance(m, nn.Embedding)]
    try:
        with torch.no_grad():
            p.forward(inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _reads(read: torch.Tensor, ids: torch.Tensor) -> str | int | None:
    """"all" if an embedding read `ids` (B, T) whole, column j if it read ids[:, j], else None."""
    if read.untyped_storage().data_ptr() != ids.untyped_storage().data_ptr():
        return None
    if read.shape == ids.shape and read.storage_offset() == ids.storage_offset():
        return "all"
    if read.dim() == 1 and ids.dim() == 2 and len(read) == len(ids):
        return (read.storage_offset() - ids.storage_offset()) // ids.stride(1)
    return None


def _baseline_ids(p: Predictor, ids: torch.Tensor) -> torch.Tensor:
    """Tokens: padding, special tokens kept (Captum's reference for texts); other ids: 0 (unknown category)."""
    tok = p.tokenizer
    if tok is None:
        return torch.zeros_like(ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    special = torch.tensor(sorted(tok.all_special_ids), device=ids.device)
    return torch.where(torch.isin(ids, special), ids, torch.full_like(ids, pad))


def _tokens(p: Predictor, ids: torch.Tensor) -> list[str]:
    tok = p.tokenizer
    return tok.convert_ids_to_tokens(ids[0].tolist()) if tok is not None else [str(i) for i in ids[0].tolist()]


def _spans(p: Predictor, ids: torch.Tensor, item: Any) -> list[tuple[int, int]] | None:
    """Each token's characters in the text, from the tokenizer's offsets (a fast tokenizer); a token the model's
    input has in another place than the full text's tokenization (the end token after truncation) gets (0, 0)."""
    tok = p.tokenizer
    text = item.get("text") if isinstance(item, dict) else item
    if tok is None or not getattr(tok, "is_fast", False) or not isinstance(text, str):
        return None
    full = tok(text, return_offsets_mapping=True)
    spans = []
    for i, token in enumerate(ids[0].tolist()):
        same = i < len(full["input_ids"]) and full["input_ids"][i] == token
        spans.append(tuple(full["offset_mapping"][i]) if same else (0, 0))
    return spans


@contextlib.contextmanager
def _replaced(outputs: dict[nn.Module, torch.Tensor]) -> Iterator[None]:
    """Within the block, each layer returns the given tensor instead of computing its output."""
    hooks = [layer.register_forward_hook(lambda m, args, out, x=x: x) for layer, x in outputs.items()]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def _repeat(value: Any, n: int) -> Any:
    """One item's preprocessed inputs as a batch of n copies (tensors expanded, lists repeated)."""
    if torch.is_tensor(value):
        return value.expand(n, *value.shape[1:]) if value.dim() and len(value) == 1 else value
    if isinstance(value, dict):
        return {k: _repeat(v, n) for k, v in value.items()}
    if isinstance(value, list) and len(value) == 1:
        return value * n
    return value
