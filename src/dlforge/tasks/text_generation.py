"""Causal language-model fine-tuning: a GPT-style `hf:` model (optionally with LoRA) on a text file or a
text column; perplexity on held-out text; `predict` continues prompts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from dlforge.data.split import subset
from dlforge.data.texts import TextTable, clean, read_texts
from dlforge.errors import DataError
from dlforge.models.pretrained import load_pretrained
from dlforge.pages import Section, table
from dlforge.registry import LANGUAGE_MODELS, TASKS
from dlforge.spec import DataSpec, SpecBase, SplitSpec, StrictModel, resolve_path
from dlforge.tasks.base import Prepared, Task, prediction_settings
from dlforge.tasks.capabilities import Capability, Exportable, Reported
from dlforge.tasks.language import LanguageMeta, LanguageModelSpec, LanguageTask, TokenDataset, text_items

if TYPE_CHECKING:
    from torchmetrics import MetricCollection
    from transformers import PreTrainedTokenizerBase

    from dlforge.run import Run
    from dlforge.tasks.base import Inference


class CorpusSpec(DataSpec):
    source: str = Field(description="a .txt file (one document per paragraph), a .csv/.jsonl/.parquet with a text "
                                    "column, hf:<dataset id or folder>, or builtin:rotten_tomatoes")
    text_column: str = "text"
    split: SplitSpec = SplitSpec(val=0.1, test=0.1)
    block_size: int = Field(128, ge=8, le=8192, description="tokens per training sequence")
    on_error: Literal["error", "skip"] = Field("skip", description="empty documents: stop, or drop them (counted)")

    _source = field_validator("source")(resolve_path)


class CausalLMSpec(LanguageModelSpec):
    registry = LANGUAGE_MODELS
    reserved = ("tokenizer", "config", "weights")

    name: str = Field("hf:distilgpt2", description="hf:<causal LM hub id or folder> (GPT-2 style)")


class GenerateSpec(StrictModel):
    """Defaults of `predict`; each can be given per call (`--max-new-tokens`, `Predictor.predict(..., top_k=)`)."""

    max_new_tokens: int = Field(50, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=10.0, description="0: greedy (deterministic); > 0: sampling")
    top_k: int = Field(50, ge=0, description="sampling: keep the k most likely tokens (0: all)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="sampling: keep the smallest set with this much mass")
    seed: int | None = Field(None, description="sampling: seed, for repeatable samples")


class TextGenerationSpec(SpecBase):
    task: Literal["text_generation"] = "text_generation"
    data: CorpusSpec
    model: CausalLMSpec = CausalLMSpec()
    predict: GenerateSpec = GenerateSpec()


class TextGenerationMeta(LanguageMeta):
    before_fine_tuning: dict[str, float] | None = Field(None, description="the starting model's test perplexity")


@TASKS.register("text_generation")
class TextGeneration(LanguageTask, Task, Reported):
    spec_class = TextGenerationSpec
    meta_class = TextGenerationMeta
    prediction_options = tuple(GenerateSpec.model_fields)
    # Not Profiled: a profile predicts its reference items, and generating for 2000 prompts costs more than training.
    declined: ClassVar[dict[type[Capability], str]] = {Exportable: (
        "generation is a loop around the model (transformers' generate: one forward pass per new token, with a "
        "growing cache), not one tensor-in, tensor-out graph; serve them with the torch backend")}

    @classmethod
    def example_spec(cls, folder: Path) -> dict[str, Any]:
        """A corpus of short film reviews (folder/corpus.txt) and a 2-layer, 32-wide GPT-2 with fresh weights and a
        byte-level BPE tokenizer trained on the same sentences (folder/tiny-gpt2), saved as a hub model is: nothing
        downloaded; predictions continue a prompt by 8 tokens. Fine-tune a pretrained model instead with
        `model: {name: hf:distilgpt2}`."""
        from dlforge.data.examples import paragraphs, reviews

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        corpus = folder / "corpus.txt"
        corpus.write_text(paragraphs(120))
        model = _tiny_gpt2(folder / "tiny-gpt2", [r["text"] for r in reviews(200)])
        return {"name": "reviews-generation-example", "task": "text_generation",
                "data": {"source": str(corpus), "block_size": 32, "split": {"val": 0.1, "test": 0.1, "seed": 0}},
                "model": {"name": f"hf:{model}"},
                "train": {"epochs": 1, "batch_size": 8, "optimizer": {"lr": 1e-2}, "scheduler": "linear",
                          "warmup": 0.1, "seed": 0},
                "predict": {"max_new_tokens": 8}}

    # ------------------------------------------------------------ data
    def _blocks(self, table: TextTable) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
        """Documents (all, or data.limit / data.fraction of them) shuffled (seeded), joined with end-of-text,
        tokenized as one stream, cut at the split fractions into train | val | test, and each part cut into blocks of
        `block_size` tokens."""
        d = self.spec.data
        documents = subset(np.zeros(len(table.texts), dtype=np.int64), d.limit, d.fraction, d.split.seed)
        order = np.random.default_rng(d.split.seed).permutation(documents)
        stream = self._stream([table.texts[i] for i in order])
        n = len(stream)
        val_at = round(n * (1 - d.split.val - d.split.test))
        test_at = round(n * (1 - d.split.test))
        parts = stream[:val_at], stream[val_at:test_at], stream[test_at:]
        if len(parts[0]) < 2:
            raise DataError(f"{d.source}: {n} tokens leave too little text to train on")
        return tuple(_chunk(p, d.block_size) for p in parts)

    def _stream(self, texts: Sequence[str]) -> list[int]:
        """The texts' tokens as one stream, each document followed by end-of-text."""
        eos = [self.tokenizer_.eos_token_id] if self.tokenizer_.eos_token_id is not None else []
        return [t for ids in self.tokenizer_(list(texts), verbose=False)["input_ids"] for t in ids + eos]

    def _read(self, source: str) -> TextTable:
        return clean(read_texts(source, self.spec.data.text_column, label_column=None), self.spec.data.on_error)

    def prepare(self) -> Prepared:
        d, m = self.spec.data, self.spec.model
        self._load_tokenizer()
        table = self._read(d.source)
        train, val, test = self._blocks(table)
        meta = {**self._model_meta(), "preprocessing": {"block_size": d.block_size},
                "predict": self.spec.predict.model_dump(),
                "sizes": {"train": len(train), "val": len(val), "test": len(test)},
                "data": {"documents": len(table.texts), **table.counts,
                         "tokens": {k: sum(map(len, v)) for k, v in zip(("train", "val", "test"), (train, val, test),
                                                                       strict=True)}}}
        model = self._build(meta, prepare=True)
        if m.pretrained is not None:
            meta["pretrained"] = load_pretrained(model, m.pretrained, [])
        if test:  # the starting point, for the report: what fine-tuning changed on the same held-out text
            loss, _ = mean_nll(model, test, self.tokenizer_, torch.device("cpu"), self.spec.train.batch_size)
            meta["before_fine_tuning"] = {"perplexity": math.exp(loss), "loss": loss}
        return Prepared(model, TokenDataset(train, None, self.tokenizer_), TokenDataset(val, None, self.tokenizer_),
                        (test, None), meta)

    def build_model(self, meta: dict[str, Any]) -> nn.Module:
        return self._build(meta, prepare=False)

    # ------------------------------------------------------------ training
    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, _ = batch
        nll, tokens = token_nll(model, inputs)  # (B,), (B,)
        return nll.sum() / tokens.sum().clamp_min(1), nll.detach(), tokens

    def metrics(self, meta: dict[str, Any]) -> MetricCollection:
        from torchmetrics import MetricCollection  # imports scipy and transformers: only when training

        from dlforge.tasks.perplexity import TokenPerplexity

        return MetricCollection({"perplexity": TokenPerplexity()})

    # ------------------------------------------------------------ inference
    def preprocess(self, items: Sequence[Any], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
        # Left padding: every prompt ends at the last position, where generation continues.
        return self._encode(text_items(items, key="prompt"), meta["preprocessing"]["block_size"], "left")

    def forward(self, graph: nn.Module, inputs: dict[str, torch.Tensor], meta: dict[str, Any], **options: Any
                ) -> list[torch.Tensor]:
        o = prediction_settings(GenerateSpec, meta, options)
        sample = o.temperature > 0
        kwargs = {"do_sample": sample, "max_new_tokens": o.max_new_tokens,
                  "pad_token_id": self.tokenizer_.pad_token_id}
        if sample:
            kwargs.update(temperature=o.temperature, top_k=o.top_k, top_p=o.top_p)
        with torch.random.fork_rng(devices=[] if inputs["input_ids"].device.type == "cpu" else None):
            if o.seed is not None:
                torch.manual_seed(o.seed)
            out = graph.generate(**inputs, **kwargs)  # (B, T + new)
        return list(out[:, inputs["input_ids"].shape[1]:])  # the new tokens of each prompt

    def postprocess(self, outputs: list[torch.Tensor], meta: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
        tok = self.tokenizer_
        results = []
        for ids in outputs:
            ids = ids.tolist()
            if tok.eos_token_id in ids:  # stopped early: the rest is padding
                ids = ids[: ids.index(tok.eos_token_id)]
            results.append({"generated_text": tok.decode(ids, skip_special_tokens=True), "new_tokens": len(ids)})
        return results

    # ------------------------------------------------------------ evaluation
    def evaluation_data(self, meta: dict[str, Any], source: str | None = None) -> tuple[Sequence[Any], Any]:
        """Token blocks: the run's held-out test part, or all of `source`."""
        if source is None:
            return self._blocks(self._read(self.spec.data.source))[2], None
        return _chunk(self._stream(self._read(source).texts), meta["preprocessing"]["block_size"]), None

    def evaluate(self, predictor: Inference, items: Sequence[Any], targets: Any, plots: Path) -> dict[str, Any]:
        if not items:
            raise DataError("the held-out text is empty: raise data.split.test or give more text")
        loss, tokens = mean_nll(predictor.model, list(items), self.tokenizer_, predictor.device, predictor.batch_size)
        # A few continuations of held-out text, to read beside the number.
        prompts = [self.tokenizer_.decode(block[:12]) for block in list(items)[:: max(1, len(items) // 4)][:4]]
        samples = predictor.predict(prompts, max_new_tokens=30)
        return {"n": len(items), "tokens": tokens, "metrics": {"perplexity": math.exp(loss), "loss": loss},
                "samples": [{"prompt": p, **s} for p, s in zip(prompts, samples, strict=True)],
                "headline": {"name": "perplexity", "value": math.exp(loss)}}

    def report_sections(self, run: Run) -> list[Section]:
        ev = run.read_eval()
        if ev is None:
            return []
        m = ev["metrics"]
        rows = [["perplexity", f"{m['perplexity']:.3f}"], ["loss (nats/token)", f"{m['loss']:.4f}"]]
        before = run.read_meta().get("before_fine_tuning")
        if before and ev["data"] == "test split":
            rows[0].append(f"{before['perplexity']:.3f}")
            rows[1].append(f"{before['loss']:.4f}")
        header = ["metric", "fine-tuned", "before fine-tuning"][:len(rows[0])]
        body = (f"<p>Held-out text ({ev['data']}): {ev['tokens']:,} tokens in {ev['n']} blocks.</p>"
                + table(header, rows)
                + "<p>Greedy continuations of held-out text:</p>"
                + table(["prompt", "continuation"], [[s["prompt"], s["generated_text"]] for s in ev["samples"]]))
        return [Section("Evaluation", body)]


@torch.inference_mode()
def mean_nll(model: nn.Module, blocks: list[list[int]], tokenizer: PreTrainedTokenizerBase, device: torch.device,
             batch_size: int) -> tuple[float, int]:
    """(mean next-token negative log-likelihood in nats, tokens predicted) of `model` over token blocks."""
    was_training = model.training
    model.eval()
    data = TokenDataset(blocks, None, tokenizer)
    nll, tokens = 0.0, 0
    for i in range(0, len(data), batch_size):
        inputs, _ = data.collate([data[j] for j in range(i, min(i + batch_size, len(data)))])
        s, n = token_nll(model, {k: v.to(device) for k, v in inputs.items()})
        nll, tokens = nll + float(s.sum()), tokens + int(n.sum())
    model.train(was_training)
    return nll / max(tokens, 1), tokens


def token_nll(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: the summed next-token negative log-likelihood and the number of predicted tokens."""
    logits = model(**inputs)  # (B, T, V)
    targets = inputs["input_ids"][:, 1:].masked_fill(inputs["attention_mask"][:, 1:] == 0, -100)  # (B, T-1)
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                          reduction="none").view_as(targets)  # (B, T-1)
    return nll.sum(1), (targets != -100).sum(1)


def _chunk(stream: list[int], size: int) -> list[list[int]]:
    """Blocks of `size` tokens; a last block shorter than 2 tokens predicts nothing and is dropped."""
    return [stream[i:i + size] for i in range(0, len(stream), size) if len(stream[i:i + size]) >= 2]



def _tiny_gpt2(path: Path, texts: Sequence[str]) -> Path:
    """A 2-layer, 32-wide GPT-2 with fresh (seeded) weights and a byte-level BPE tokenizer of 400 tokens trained on
    `texts`, saved into `path` with save_pretrained: what `hf:<path>` loads, as it would a hub model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    end = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=end, bos_token=end, unk_token=end)
    tokenizer.save_pretrained(path)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):  # seeded weights, and the caller's random state left as it was
        torch.manual_seed(0)
        GPT2LMHeadModel(config).save_pretrained(path)
    return path
