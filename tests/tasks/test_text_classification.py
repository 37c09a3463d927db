"""Text classification: fine-tuning from a local pretrained folder, LoRA, freezing, a from-scratch encoder
that overfits, the run reloaded without its source, and bad text data named by file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dlforge
from dlforge.data.texts import read_texts
from dlforge.errors import DataError, DlforgeError, SpecError
from dlforge.evaluate import evaluate_run
from dlforge.spec import validate_spec
from tests.conftest import cli, sentiment_rows, write_csv, write_spec


def text_spec(source: Path | str, model: dict, **train: object) -> dict:
    return {"name": "text-test", "task": "text_classification",
            "data": {"source": str(source), "max_length": 32, "split": {"val": 0.2, "test": 0.2, "seed": 0}},
            "model": model,
            "train": {"epochs": 3, "batch_size": 8, "optimizer": {"lr": 3e-3}, "scheduler": "linear", "warmup": 0.1,
                      "seed": 0, **train}}


def test_fine_tuned_run_reloads_without_its_source_and_predicts_the_same(tiny_bert: Path, tmp_path: Path) -> None:
    source = tmp_path / "model"
    shutil.copytree(tiny_bert, source)  # a private copy, deleted below
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(60))
    run = dlforge.train(validate_spec(text_spec(data, {"name": f"hf:{source}"})), tmp_path / "runs", progress=False)
    in_memory = run.read_eval()  # computed by the model still in memory, before it was saved
    shutil.rmtree(source)  # the run must carry its tokenizer and config: nothing points back to the source
    reloaded, _ = evaluate_run(run.path, out=tmp_path / "again")
    assert reloaded["metrics"]["log_loss"] == pytest.approx(in_memory["metrics"]["log_loss"], abs=1e-6)
    assert reloaded["confusion_matrix"] == in_memory["confusion_matrix"]
    assert (run.path / "assets" / "tokenizer" / "tokenizer_config.json").exists()
    predictor = dlforge.load(run.path)
    texts = ["a brilliant and charming film", {"text": "a dull and tedious film"}]
    first, second = predictor.predict(texts), predictor.predict(texts)
    assert first == second and {p["label"] for p in first} <= {"fresh", "rotten"}
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in first)


def test_lora_trains_only_the_adapters_and_the_head(tiny_bert: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(40))
    spec = text_spec(data, {"name": f"hf:{tiny_bert}", "lora": {"r": 4, "alpha": 8}})
    run = dlforge.train(validate_spec(spec), tmp_path / "runs", progress=False)
    meta = run.read_meta()
    assert meta["parameters"]["trainable"] < 0.2 * meta["parameters"]["total"]
    pretrained = load_file(tiny_bert / "model.safetensors")
    trained = load_file(run.weights_path)
    lora = [k for k in trained if "lora_" in k]
    assert lora and all(".query." in k or ".value." in k for k in lora)  # peft's default targets for BERT
    base = {k: v for k, v in trained.items() if "lora_" not in k and not k.startswith("net.classifier.")}
    for name, value in base.items():  # net.bert.encoder... <- encoder... as the pretrained folder names it
        original = pretrained[name.removeprefix("net.bert.").replace(".base_layer.", ".")]  # peft wraps targets
        assert torch.equal(value, original), f"{name} changed: only adapters and the head may train"
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero: nonzero means the adapters trained
    # A finished LoRA run rebuilds with its adapters and predicts.
    assert len(dlforge.load(run.path).predict(["a clever film"])) == 1


def test_freezing_keeps_matched_weights_and_names_bad_patterns(tiny_bert: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(40))
    spec = text_spec(data, {"name": f"hf:{tiny_bert}", "freeze": ["*embeddings*", "*layer.0.*"]}, epochs=1)
    run = dlforge.train(validate_spec(spec), tmp_path / "runs", progress=False)
    pretrained, trained = load_file(tiny_bert / "model.safetensors"), load_file(run.weights_path)
    assert torch.equal(trained["net.bert.embeddings.word_embeddings.weight"],
                       pretrained["embeddings.word_embeddings.weight"])
    assert torch.equal(trained["net.bert.encoder.layer.0.attention.self.query.weight"],
                       pretrained["encoder.layer.0.attention.self.query.weight"])
    assert not torch.equal(trained["net.bert.encoder.layer.1.attention.self.query.weight"],
                           pretrained["encoder.layer.1.attention.self.query.weight"])
    spec["model"]["freeze"] = ["*no_such_layer*"]
    with pytest.raises(DlforgeError, match=r"model\.freeze: '\*no_such_layer\*' matches no parameter"):
        dlforge.train(validate_spec(spec), tmp_path / "runs", progress=False)


def test_from_scratch_encoder_overfits_a_handful_of_sentences(tmp_path: Path) -> None:
    rows = sentiment_rows(8)
    data = write_csv(tmp_path / "few.csv", rows)
    spec = text_spec(data, {"name": "transformer", "kwargs": {"d_model": 32, "heads": 2, "layers": 1, "dropout": 0.0}},
                     epochs=40, batch_size=4, scheduler="none", warmup=0)
    spec["data"]["split"] = {"val": 0.0, "test": 0.0}
    spec["train"]["monitor"] = {"metric": "train/loss"}
    run = dlforge.train(validate_spec(spec), tmp_path / "runs", progress=False)
    history = run.read_metrics()
    assert history[-1]["train/loss"] < 0.05 * history[0]["train/loss"]
    predicted = [p["label"] for p in dlforge.load(run.path).predict([r["text"] for r in rows])]
    assert predicted == [r["label"] for r in rows]


def test_bad_text_data_is_named_by_file_and_line(tmp_path: Path) -> None:
    rows = sentiment_rows(12)
    rows[4]["text"] = "   "
    data = write_csv(tmp_path / "reviews.csv", rows)
    spec = text_spec(data, {"name": "transformer"})
    # Row 5 of the data is on line 6 (the header is line 1).
    with pytest.raises(DataError, match=rf"{data}:6: the text is empty .*data\.on_error: skip"):
        dlforge.train(validate_spec(spec), tmp_path / "runs", progress=False)

    long = sentiment_rows(12)
    long[2]["text"] = " ".join(["wonderful"] * 80)
    data = write_csv(tmp_path / "long.csv", long)
    spec = text_spec(data, {"name": "transformer"})
    spec["data"]["too_long"] = "error"
    with pytest.raises(DataError, match=rf"{data}:4: the text has \d+ tokens, over data\.max_length 32"):
        dlforge.train(validate_spec(spec), tmp_path / "runs", progress=False)

    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text('{"text": "fine", "label": "fresh"}\n{"text": "oops", "label": \n')
    with pytest.raises(DataError, match=rf"{jsonl}:2: not valid JSON"):
        read_texts(str(jsonl))
    with pytest.raises(DataError, match=r"no column 'review' \(data\.text_column\); columns: text, label"):
        read_texts(str(write_csv(tmp_path / "r.csv", rows)), text_column="review")
    with pytest.raises(SpecError, match=r"data\.too_long"):
        validate_spec({**spec, "data": {**spec["data"], "too_long": "wrap"}})


def test_skip_policies_drop_and_count(tmp_path: Path) -> None:
    rows = sentiment_rows(30)
    rows[3]["text"], rows[7]["label"] = "", ""
    rows[9]["text"] = " ".join(["dull"] * 80)
    data = write_csv(tmp_path / "reviews.csv", rows)
    spec = text_spec(data, {"name": "transformer", "kwargs": {"d_model": 16, "heads": 2, "layers": 1}}, epochs=1)
    spec["data"].update(on_error="skip", too_long="skip", split={"val": 0.0, "test": 0.0})
    spec["train"]["monitor"] = {"metric": "train/loss"}
    meta = dlforge.train(validate_spec(spec), tmp_path / "runs", progress=False).read_meta()
    assert meta["data"] == {"rows": 28, "empty_text": 1, "missing_label": 1, "too_long": 1}
    assert meta["sizes"]["train"] == 27  # 28 usable rows, less the over-long one


def test_rotten_tomatoes_and_a_local_datasets_folder(tmp_path: Path) -> None:
    table = read_texts("builtin:rotten_tomatoes")
    assert len(table.texts) == 4866 and table.labels.count("fresh") == 2455 and table.labels.count("rotten") == 2411
    folder = tmp_path / "dataset"
    folder.mkdir()
    write_csv(folder / "train.csv", sentiment_rows(6))
    write_csv(folder / "test.csv", sentiment_rows(4, seed=1))
    local = read_texts(f"hf:{folder}")  # through `datasets`, the same call a hub id takes
    assert len(local.texts) == 10 and set(local.labels) == {"fresh", "rotten"}
    with pytest.raises(DataError, match="hf:no/such-dataset: cannot load the dataset"):
        read_texts("hf:no/such-dataset")


def test_cli_predicts_texts(tiny_bert: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(30))
    spec_file = write_spec(tmp_path / "spec.yaml", text_spec(data, {"name": f"hf:{tiny_bert}"}, epochs=1))
    cli("train", spec_file, "--runs-dir", tmp_path / "runs", check=True)
    run = next((tmp_path / "runs").iterdir())
    proc = cli("predict", run, "--text", "a funny film", "--text", "an awful film", check=True)
    out = json.loads(proc.stdout)
    assert [o["input"] for o in out] == ["a funny film", "an awful film"]
    assert all(o["label"] in ("fresh", "rotten") for o in out)
    proc = cli("predict", run)
    assert proc.returncode == 2 and "give input files" in proc.stderr
