"""The attention lab: one --quick run (it fine-tunes hf:default on a Rotten Tomatoes subset), its float64
equivalences, its maps against the model's own, its figures, and the `run=` option."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import dlforge
from dlforge.errors import DlforgeError, RunError
from dlforge.labs import describe, run_lab
from dlforge.labs.attention import COMPARISONS, DEFAULT_SENTENCE
from dlforge.spec import validate_spec
from tests.conftest import sentiment_rows, write_csv


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One quick lab run, fine-tuning its own model: (folder, results.json as read back)."""
    out = tmp_path_factory.mktemp("lab") / "attention"
    returned = run_lab("attention", out, quick=True)
    results = json.loads((out / "results.json").read_text())
    assert results["headline"] == returned["headline"]
    return out, results


def test_results_describe_the_fine_tuned_model(quick: tuple) -> None:
    out, results = quick
    assert results["lab"] == "attention" and results["quick"] is True
    model = results["model"]
    assert model["trained_here"] and model["name"] == "hf:default" and model["model_type"] == "bert"
    run = Path(model["run"])
    assert run.parent == out / "run" and (run / "COMPLETE").exists()
    assert model["train_sentences"] < results["config"]["quick_sentences"]  # the quick subset, split 70/10/20
    tokens = results["tokens"]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "wonderful" in tokens
    assert results["attention"]["shape"] == [model["layers"], model["heads"], len(tokens), len(tokens)] \
        == [6, 12, len(tokens), len(tokens)]


def test_attention_from_scratch_equals_torch_and_hf_in_float64(quick: tuple) -> None:
    _, results = quick
    for case, padded in (("sentence", False), ("padded_batch", True)):
        eq = results["equivalence"][case]
        assert (eq["padded_tokens"] > 0) is padded
        assert [row["layer"] for row in eq["per_layer"]] == list(range(6))
        for row in eq["per_layer"]:
            for key in COMPARISONS:
                assert 0.0 <= row[key] <= 1e-6, f"{case}, layer {row['layer']}: {key} = {row[key]:.2e}"
            assert row["row_sum_max_error"] <= 1e-12  # float64 rows sum to 1
        assert eq["max"] == {k: max(row[k] for row in eq["per_layer"]) for k in eq["max"]}
    assert 0.0 <= results["equivalence_max"] <= 1e-6
    # In the model's float32 the same comparison is only good to float32's rounding.
    assert results["float32_reference"]["ours_vs_hf_eager_max"] < 1e-4


def test_padding_is_masked_on_the_key_side(quick: tuple) -> None:
    _, results = quick
    padding = results["padding"]
    assert padding["short_sentence_tokens"] < padding["padded_length"]
    # exp(dtype min − max) underflows to exactly 0, in dlforge's, torch's and HF's attention alike
    assert results["equivalence"]["padded_batch"]["max"]["max_weight_on_padded_keys"] == 0.0
    assert padding["short_alone_vs_padded_weights"] <= 1e-6  # padding leaves the real tokens' attention as it was
    assert padding["short_alone_vs_padded_logits"] <= 1e-6


def test_maps_are_the_models_attention_and_rows_sum_to_one(quick: tuple) -> None:
    _, results = quick
    maps = np.array(results["attention"]["maps"])  # (L, H, T, T)
    assert maps.min() >= 0 and np.abs(maps.sum(-1) - 1).max() < 1e-5
    assert results["attention"]["row_sum_max_error"] < 1e-5
    np.testing.assert_allclose(results["attention"]["last_layer_mean"], maps[-1].mean(0), atol=1e-7)
    # Recomputed here from the saved run: the lab's maps are the fine-tuned model's own eager attention.
    predictor = dlforge.load(results["model"]["run"])
    batch = predictor.tokenizer([DEFAULT_SENTENCE], return_tensors="pt")
    assert predictor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()) == results["tokens"]
    with torch.no_grad():
        attentions = predictor.model.attentions(batch["input_ids"], batch["attention_mask"])
    np.testing.assert_allclose(torch.stack([a[0] for a in attentions]).numpy(), maps, atol=1e-6)


def test_head_statistics(quick: tuple) -> None:
    _, results = quick
    maps = np.array(results["attention"]["maps"])
    heads, T = results["heads"], len(results["tokens"])
    assert len(heads) == 72 and results["attention"]["uniform_entropy"] == pytest.approx(math.log(T))
    for h in heads:
        a = maps[h["layer"], h["head"]]
        entropy = float(-(a * np.log(np.clip(a, 1e-30, None))).sum(-1).mean())  # nats, mean over queries
        assert h["entropy"] == pytest.approx(entropy, abs=1e-5)
        assert 0 <= h["entropy"] <= math.log(T) + 1e-6
        assert h["top_position"] == int(a.mean(0).argmax()) and h["top_token"] == results["tokens"][h["top_position"]]
        assert h["shares"]["cls"] == pytest.approx(float(a[:, 0].mean()), abs=1e-6)
    # MiniLM's pretrained heads survive a short fine-tune: several park their attention on [CLS]/[SEP],
    # and some are sharp (a quarter of uniform entropy or less).
    assert sum(h["pattern"] in ("cls", "sep") for h in heads) >= 3
    assert min(h["entropy"] for h in heads) < 0.25 * math.log(T)


def test_figures_and_summary(quick: tuple) -> None:
    out, results = quick
    sizes = {"attention_maps.png": (1500, 700), "attention_last_layer.png": (500, 400),
             "attention_entropy.png": (400, 200)}
    for name, (width, height) in sizes.items():
        assert name in results["files"]
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width >= width and image.height >= height, (name, image.size)
            colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
            assert colours is not None and len(colours) > 50  # a drawn heatmap, not a blank canvas
    summary = (out / "summary.md").read_text()
    assert "softmax(Q Kᵀ / √d)" in summary and "attention_maps.png" in summary
    for text in COMPARISONS.values():
        assert f"| {text} |" in summary
    assert "| L5 |" in summary  # the entropy table's last layer
    assert not list(out.glob(".*.tmp"))


def test_run_option_analyses_a_given_run(quick: tuple, tmp_path: Path) -> None:
    _, first = quick
    results = run_lab("attention", tmp_path, quick=True, run=first["model"]["run"], sentence="the acting is wonderful")
    assert results["model"]["trained_here"] is False and not (tmp_path / "run").exists()
    assert results["tokens"] == ["[CLS]", "the", "acting", "is", "wonderful", "[SEP]"]
    assert results["attention"]["shape"] == [6, 12, 6, 6] and results["equivalence_max"] <= 1e-6
    assert "quick_sentences" not in results["config"]


def test_lora_run_of_another_bert(tiny_bert: Path, tmp_path: Path) -> None:
    """A LoRA run: the effective query/value weights (W + B·A·scale) are the ones the equivalences use."""
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(40))
    spec = {"name": "lora", "task": "text_classification",
            "data": {"source": str(data), "max_length": 32, "split": {"val": 0.2, "test": 0.2, "seed": 0}},
            "model": {"name": f"hf:{tiny_bert}", "lora": {"r": 4, "alpha": 8}},
            "train": {"epochs": 2, "batch_size": 8, "optimizer": {"lr": 3e-2}, "seed": 0}}
    run = dlforge.train(validate_spec(spec), tmp_path / "runs", progress=False)
    lora_b = [v for k, v in load_file(run.weights_path).items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 1e-4 for v in lora_b)  # trained: ignoring it would miss HF's weights
    results = run_lab("attention", tmp_path / "lab", run=run.path)
    assert results["model"]["lora"] and results["attention"]["shape"][:2] == [2, 2]
    assert results["equivalence_max"] <= 1e-6
    for row in results["equivalence"]["padded_batch"]["per_layer"]:
        assert all(row[key] <= 1e-6 for key in COMPARISONS) and row["max_weight_on_padded_keys"] == 0.0


def test_run_option_errors(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-run"
    with pytest.raises(DlforgeError, match=r"run='.*no-such-run': no such run directory"):
        run_lab("attention", tmp_path / "out", run=missing)
    assert not (tmp_path / "out" / "results.json").exists() and not (tmp_path / "out" / "run").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a dlforge run directory"):
        run_lab("attention", tmp_path / "out", run=tmp_path / "empty")
    with pytest.raises(DlforgeError, match="sentence must be a non-empty string"):
        run_lab("attention", tmp_path / "out", run=missing, sentence="  ")


def test_listed_with_its_description() -> None:
    assert describe()["attention"].startswith("Self-attention: a fine-tuned transformer's attention maps")
