"""Text classification: a pretrained transformer fine-tuned (fully, with frozen layers or with LoRA),
or a transformer encoder trained from scratch, on texts with labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from dlforge.data.split import split_data
from dlforge.data.texts import TextTable, clean, read_texts
from dlforge.errors import DataError
from dlforge.models.pretrained import load_pretrained
from dlforge.registry import TASKS, TEXT_MODELS
from dlforge.spec import DataSpec, SpecBase, resolve_path
from dlforge.tasks.base import Prepared
from dlforge.tasks.classification import ClassificationTask
from dlforge.tasks.language import LanguageModelSpec, LanguageTask, TokenDataset, text_items


class TextDataSpec(DataSpec):
    source: str = Field(description="builtin:rotten_tomatoes, a .csv/.jsonl/.parquet file, or hf:<dataset id "
                                    "or folder> (read with `datasets`)")
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = Field(128, ge=4, le=8192, description="tokens per text, special tokens included")
    too_long: Literal["truncate", "skip", "error"] = Field(
        "truncate", description="texts over max_length: cut them, drop them (counted), or stop")
    on_error: Literal["error", "skip"] = Field("error", description="empty texts and missing labels: stop, "
                                                                    "or drop them (counted)")

    _source = field_validator("source")(resolve_path)


class TextClassifierSpec(LanguageModelSpec):
    registry = TEXT_MODELS
    reserved = ("num_classes", "tokenizer", "config", "weights")

    name: str = Field("hf:default", description="hf:<hub id or folder> (hf:default: the shipped MiniLM), "
                                                "or transformer (written here, trained from scratch)")


class TextClassificationSpec(SpecBase):
    task: Literal["text_classification"] = "text_classification"
    data: TextDataSpec
    model: TextClassifierSpec = TextClassifierSpec()


@TASKS.register("text_classification")
class TextClassification(LanguageTask, ClassificationTask):
    spec_class = TextClassificationSpec
    # batches pad to their longest text: the token axis varies too
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {"input_ids": {1: "tokens"}, "attention_mask": {1: "tokens"}}
    explained_inputs = ("input_ids",)  # through the embedding layer that reads them

    @classmethod
    def example_spec(cls, folder: Path) -> dict[str, Any]:
        """24 short film reviews, fresh or rotten (folder/reviews.csv), and a one-layer transformer encoder trained
        from scratch (the shipped MiniLM tokenizer: nothing downloaded). Fine-tune a pretrained model instead with
        `model: {name: hf:<hub id or folder>}`."""
        from dlforge.data.examples import reviews, write_csv

        source = write_csv(Path(folder) / "reviews.csv", reviews(24))
        return {"name": "reviews-example", "task": "text_classification",
                "data": {"source": str(source), "max_length": 32, "split": {"val": 0.2, "test": 0.2, "seed": 0}},
                "model": {"name": "transformer", "kwargs": {"d_model": 32, "heads": 2, "layers": 1}},
                "train": {"epochs": 1, "batch_size": 8, "optimizer": {"lr": 3e-3}, "scheduler": "linear",
                          "warmup": 0.1, "seed": 0}}

    def _read(self, source: str) -> TextTable:
        d = self.spec.data
        return clean(read_texts(source, d.text_column, d.label_column), d.on_error)

    def _split(self, table: TextTable, classes: list[str]) -> tuple[np.ndarray, ...]:
        return split_data(_targets(table, classes), self.spec.data)

    def prepare(self) -> Prepared:
        d, m = self.spec.data, self.spec.model
        self._load_tokenizer()
        table = self._read(d.source)
        classes = sorted(set(table.labels))
        if len(classes) < 2:
            raise DataError(f"{d.source}: column {d.label_column!r} has one label ({classes[0]!r}); a classifier "
                            "needs two or more")
        train_idx, val_idx, test_idx = self._split(table, classes)
        meta = {"classes": classes, **self._model_meta(),
                "preprocessing": {"max_length": d.max_length}}
        model = self._build(meta, prepare=True, num_classes=len(classes))
        if m.pretrained is not None:
            meta["pretrained"] = load_pretrained(model, m.pretrained, classes)
        (train, kept), (val, _) = (self._dataset(table.subset(idx), classes) for idx in (train_idx, val_idx))
        meta["data"] = {"rows": len(table.texts), **kept.counts}  # what was dropped or cut, by reason
        meta["sizes"] = {"train": len(train), "val": len(val), "test": len(test_idx)}
        test = table.subset(test_idx)
        return Prepared(model, train, val, (test.texts, _targets(test, classes)), meta,
                        train_columns=(_frame(kept), np.asarray(train.targets)))

    def _dataset(self, table: TextTable, classes: list[str]) -> tuple[TokenDataset, TextTable]:
        """The tokenized dataset and the rows it kept."""
        d = self.spec.data
        ids, table = self._tokenize(table, d.max_length, d.too_long)
        return TokenDataset(ids, _targets(table, classes), self.tokenizer_), table

    def build_model(self, meta: dict[str, Any]) -> nn.Module:
        return self._build(meta, prepare=False, num_classes=len(meta["classes"]))

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, targets = batch
        outputs = model(**inputs)  # (B, K) logits
        return self.loss(outputs, targets), outputs, targets

    def preprocess(self, items: Sequence[Any], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self._encode(text_items(items), meta["preprocessing"]["max_length"])

    def example_inputs(self, meta: dict[str, Any], batch: int = 2) -> dict[str, torch.Tensor]:
        # texts of different lengths: the shorter ones are padded, so the mask holds zeros as in real batches
        inputs = self.preprocess([f"an example text{' that goes on' * i}" for i in range(batch)], meta)
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}  # (B, T) each

    def forward(self, graph: nn.Module, inputs: dict[str, torch.Tensor], meta: dict[str, Any], **options: Any
                ) -> torch.Tensor:
        return graph(**inputs).float()

    def evaluation_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any]:
        table = self._evaluation_table(meta, source)
        return table.texts, _targets(table, meta["classes"])

    def audit_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any, Any]:
        """The texts, their targets, and the table's columns beside them (the text, and others it has)."""
        table = self._evaluation_table(meta, source)
        return table.texts, _targets(table, meta["classes"]), _frame(table)

    def _evaluation_table(self, meta: dict[str, Any], source: str | None) -> TextTable:
        classes = meta["classes"]
        table = self._read(source or self.spec.data.source)
        unknown = sorted(set(table.labels) - set(classes))
        if unknown:
            raise DataError(f"{source or self.spec.data.source}: labels {unknown} are not among the model's "
                            f"{classes}")
        if source is None:
            table = table.subset(self._split(table, classes)[2])
        return table

    def plot_examples(self, items: Sequence[Any], targets: np.ndarray, probs: np.ndarray, classes: list[str],
                      path: Path) -> None:
        from dlforge import plots

        predicted = probs.argmax(1)
        wrong = np.flatnonzero(predicted != targets)
        wrong = wrong[np.argsort(-probs[wrong].max(1))][:12]  # the most confident mistakes
        rows = [(items[i], classes[predicted[i]], float(probs[i].max()), classes[targets[i]]) for i in wrong]
        plots.text_examples(rows, path)


def _frame(table: TextTable) -> Any:
    """The rows' text and other columns as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame({"text": table.texts, **table.columns})


def _targets(table: TextTable, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[label] for label in table.labels], dtype=np.int64)
