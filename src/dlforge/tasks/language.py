"""What the text tasks share: the tokenizer (kept in the run's assets), token datasets with dynamic
padding, and a transformer model with optional LoRA and frozen layers, rebuilt from meta alone."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.utils.data import Dataset

from dlforge.errors import DataError
from dlforge.models.hf import DEFAULT, add_lora, freeze, load_tokenizer
from dlforge.run_meta import RunMeta
from dlforge.spec import ModelSpec, StrictModel
from dlforge.tasks.capabilities import Tokenized
from dlforge.wire import TextWire

WORD = re.compile(r"[^\W\d_]+")  # a run of letters

if TYPE_CHECKING:
    import pandas as pd
    from transformers import PreTrainedTokenizerBase

    from dlforge.data.texts import TextTable

log = logging.getLogger("dlforge")


class LoraSpec(StrictModel):
    r: int = Field(8, ge=1, description="rank of the low-rank update")
    alpha: float = Field(16.0, gt=0.0, description="scale: the update is multiplied by alpha / r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(None, description="Linear layers to adapt, e.g. [query, value]; "
                                                               "null: peft's default for the architecture")


class LanguageModelSpec(ModelSpec):
    """`model:` of a text task. `hf:<hub id or folder>` or a model written here (`transformer`)."""

    tokenizer: str | None = Field(None, description="hub id or folder; null: the hf model's own tokenizer "
                                                    "(hf:default's for models written here)")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="hf models: start from the pretrained weights, or the same architecture "
                                  "with fresh weights")
    lora: LoraSpec | None = Field(None, description="train low-rank adapters (peft) instead of all weights")
    freeze: list[str] = Field(default_factory=list, description="glob patterns of parameter names kept fixed, "
                                                                "e.g. ['*embeddings*', '*layer.[0-2].*']")

    @model_validator(mode="after")
    def _tokenizer_default(self) -> LanguageModelSpec:
        if self.tokenizer is None:
            family, sep, rest = self.name.partition(":")
            self.tokenizer = rest if sep and family == "hf" else DEFAULT
        return self


class TokenDataset(Dataset):
    """Token ids per text (and a target per text); `collate` pads each batch to its own longest text."""

    def __init__(self, ids: list[list[int]], targets: Sequence[Any] | None, tokenizer: PreTrainedTokenizerBase
                 ) -> None:
        self.ids, self.targets, self.tokenizer = ids, targets, tokenizer

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[list[int], Any]:
        return self.ids[i], None if self.targets is None else self.targets[i]

    def collate(self, rows: list[tuple[list[int], Any]]) -> tuple[dict[str, torch.Tensor], Any]:
        batch = self.tokenizer.pad({"input_ids": [ids for ids, _ in rows]}, return_tensors="pt")
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}  # (B, T) each
        if self.targets is None:
            return inputs, None
        return inputs, torch.as_tensor([t for _, t in rows])


class LanguageMeta(RunMeta):
    """A text model's meta: how to rebuild it without its hub checkpoint (config, LoRA, frozen layers)."""

    tokenizer: str | None = None
    init: Literal["pretrained", "random"] = "pretrained"
    lora: dict[str, Any] | None = None
    freeze: list[str] = Field(default_factory=list)
    hf_config: dict[str, Any] | None = Field(None, alias="model_config", description="a hf model's config")
    parameters: dict[str, int] | None = Field(None, description="trainable and total")


class LanguageTask(Tokenized):
    """Mixin for text tasks: `tokenizer_` is set in `prepare` (from the spec) or `load_assets` (from a run)."""

    wire = TextWire()
    meta_class = LanguageMeta

    spec: Any
    tokenizer_: PreTrainedTokenizerBase

    def _load_tokenizer(self) -> None:
        self.tokenizer_ = load_tokenizer(self.spec.model.tokenizer)

    def save_assets(self, directory: Path) -> None:
        self.tokenizer_.save_pretrained(directory / "tokenizer")

    def load_assets(self, directory: Path) -> None:
        self.tokenizer_ = load_tokenizer(str(directory / "tokenizer"))

    def input_statistics(self, items: Sequence[Any], meta: dict[str, Any]) -> pd.DataFrame:
        """The wire's text statistics and the out-of-vocabulary rate: the share of a text's words that the
        tokenizer has no single token for (it splits them into pieces, or maps them to its unknown token)."""
        table = self.wire.statistics(list(items), meta)
        texts = [item if isinstance(item, str) else str(item) for item in items]
        words = [WORD.findall(t) for t in texts]
        unique = sorted({w for ws in words for w in ws})
        pieces = self.tokenizer_(unique, add_special_tokens=False)["input_ids"] if unique else []
        unk = self.tokenizer_.unk_token_id
        unknown = {w for w, ids in zip(unique, pieces, strict=True) if len(ids) != 1 or ids[0] == unk}
        table["out_of_vocabulary"] = [sum(w in unknown for w in ws) / len(ws) if ws else 0.0 for ws in words]
        return table

    def _model_meta(self) -> dict[str, Any]:
        m = self.spec.model
        return {"model": m.name, "model_kwargs": m.kwargs, "tokenizer": m.tokenizer, "init": m.init,
                "lora": m.lora.model_dump() if m.lora else None, "freeze": m.freeze}

    def _build(self, meta: dict[str, Any], prepare: bool, **fixed: Any) -> nn.Module:
        """The model of `meta`: in `prepare`, with its pretrained weights (hf, init: pretrained) and its
        config recorded in `meta`; otherwise from that config, for weights that come from a run."""
        spec_class: type[ModelSpec] = type(self.spec.model)
        model = spec_class.build(meta["model"], meta["model_kwargs"], tokenizer=self.tokenizer_,
                                 config=None if prepare else meta.get("model_config"),
                                 weights=prepare and meta["init"] == "pretrained", **fixed)
        if prepare and hasattr(model, "config_dict"):
            meta["model_config"] = model.config_dict()
        if meta["lora"]:
            add_lora(model, **meta["lora"])
        if meta["freeze"]:
            freeze(model, meta["freeze"])
        if prepare:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in model.parameters())
            meta["parameters"] = {"trainable": trainable, "total": total}
            log.info("model %s: %s of %s parameters trainable (%.2f%%)", meta["model"], f"{trainable:,}",
                     f"{total:,}", 100 * trainable / max(total, 1))
        return model

    def _tokenize(self, table: TextTable, max_length: int, too_long: str) -> tuple[list[list[int]], TextTable]:
        """Token ids per text, cut to `max_length`; over-long texts are truncated, skipped or an error."""
        tok = self.tokenizer_
        if not table.texts:  # e.g. no validation split
            return [], table
        full = tok(table.texts, truncation=False, verbose=False)["input_ids"]
        long = [i for i, ids in enumerate(full) if len(ids) > max_length]
        n = len(full)
        counts = {**table.counts, "too_long": len(long)}
        if long and too_long == "error":
            i = long[0]
            raise DataError(f"{table.where[i]}: the text has {len(full[i])} tokens, over data.max_length "
                            f"{max_length} ({len(long)} such text(s); set data.too_long: truncate or skip)")
        if long and too_long == "skip":
            drop = set(long)
            keep = [i for i in range(len(full)) if i not in drop]
            table, full = table.subset(keep), [full[i] for i in keep]
            if not full:
                raise DataError(f"data.max_length: every text is over {max_length} tokens")
        if long:
            log.warning("%d of %d texts are over data.max_length %d tokens: %s", len(long), n, max_length,
                        "skipped" if too_long == "skip" else "truncated")
        table.counts = counts
        ids = tok(table.texts, truncation=True, max_length=max_length)["input_ids"] if too_long == "truncate" \
            else full
        return ids, table

    def _encode(self, texts: Sequence[str], max_length: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Raw texts -> padded (B, T) input_ids and attention_mask; inference always truncates."""
        tok = self.tokenizer_
        tok.padding_side = padding_side
        batch = tok(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def text_items(items: Sequence[Any], key: str = "text") -> list[str]:
    """Predictor items: strings, or dicts with a `key` entry."""
    texts = []
    for i, item in enumerate(items):
        text = item.get(key) if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise DataError(f"item {i}: expected a string or {{{key!r}: string}}, got {type(item).__name__}")
        texts.append(text)
    return texts
