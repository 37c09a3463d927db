"""Causal language-model fine-tuning on a tiny GPT-2 built here, end to end: train, perplexity, generate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dlforge
from dlforge.errors import DlforgeError
from dlforge.spec import validate_spec
from tests.conftest import cli, sentiment_rows, write_spec


def corpus(path: Path) -> Path:
    """Paragraphs of the same few sentence shapes: a small model learns them quickly."""
    rows = sentiment_rows(120)
    path.write_text("\n\n".join(" ".join(r["text"] for r in rows[i:i + 4]) for i in range(0, 120, 4)))
    return path


def generation_spec(source: Path, model: Path, **extra: object) -> dict:
    return {"name": "gen-test", "task": "text_generation",
            "data": {"source": str(source), "block_size": 32, "split": {"val": 0.1, "test": 0.1, "seed": 0}},
            "model": {"name": f"hf:{model}", **extra},
            "train": {"epochs": 12, "batch_size": 8, "optimizer": {"lr": 1e-2}, "scheduler": "linear",
                      "warmup": 0.1, "seed": 0}}


def test_fine_tuning_lowers_held_out_perplexity_and_predict_generates(tiny_gpt2: Path, tmp_path: Path) -> None:
    spec_file = write_spec(tmp_path / "spec.yaml", generation_spec(corpus(tmp_path / "corpus.txt"), tiny_gpt2))
    cli("train", spec_file, "--runs-dir", tmp_path / "runs", check=True)
    run = dlforge.Run.open(next((tmp_path / "runs").iterdir()))
    ev = run.read_eval()
    history = run.read_metrics()
    vocab = json.loads((run.path / "meta.json").read_text())["model_config"]["vocab_size"]
    # An untrained model is near uniform (perplexity ~ vocabulary size); fine-tuning must do far better.
    assert history[0]["val/perplexity"] > history[-1]["val/perplexity"]
    assert ev["metrics"]["perplexity"] < vocab / 4
    assert ev["metrics"]["perplexity"] == pytest.approx(math.exp(ev["metrics"]["loss"]))
    before = run.read_meta()["before_fine_tuning"]  # the same held-out text, scored by the starting model
    assert before["perplexity"] > 2 * ev["metrics"]["perplexity"]
    assert "before fine-tuning" in (run.path / "report.html").read_text()
    assert ev["tokens"] > 0 and len(ev["samples"]) >= 1

    proc = cli("predict", run.path, "--prompt", "a wonderful and", "--max-new-tokens", "6", check=True)
    greedy = json.loads(proc.stdout)[0]
    assert greedy["input"] == "a wonderful and" and 1 <= greedy["new_tokens"] <= 6
    predictor = dlforge.load(run.path)
    assert predictor.predict(["a wonderful and"], max_new_tokens=6)[0] == {k: greedy[k] for k in greedy
                                                                            if k != "input"}
    # Sampling with a seed repeats; the batch answers as single prompts do (left padding).
    a = predictor.predict(["a dull", "a charming and clever film"], temperature=0.9, seed=3, max_new_tokens=5)
    b = predictor.predict(["a dull", "a charming and clever film"], temperature=0.9, seed=3, max_new_tokens=5)
    assert a == b
    one = predictor.predict(["a charming and clever film"], max_new_tokens=5)
    assert predictor.predict(["a dull", "a charming and clever film"], max_new_tokens=5)[1] == one[0]
    with pytest.raises(DlforgeError, match=r"prediction option top_p=2\.0"):
        predictor.predict(["a"], top_p=2.0)


def test_lora_leaves_the_language_model_weights_alone(tiny_gpt2: Path, tmp_path: Path) -> None:
    spec = generation_spec(corpus(tmp_path / "corpus.txt"), tiny_gpt2, lora={"r": 4, "alpha": 8})
    spec["train"]["epochs"] = 1
    run = dlforge.train(validate_spec(spec), tmp_path / "runs", progress=False)
    pretrained, trained = load_file(tiny_gpt2 / "model.safetensors"), load_file(run.weights_path)
    lora = [k for k in trained if "lora_" in k]
    assert lora and all("c_attn" in k for k in lora)  # peft's default target for GPT-2
    for name, value in trained.items():
        if "lora_" not in name:
            key = name.removeprefix("net.").replace(".base_layer.", ".")
            original = pretrained[key if key != "lm_head.weight" else "transformer.wte.weight"]  # tied weights
            assert torch.equal(value, original), f"{name} changed"
    assert dlforge.load(run.path).predict(["a clever"], max_new_tokens=3)[0]["new_tokens"] <= 3
