"""Shared fixtures: small specs, image folders made from the digits, one trained run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_digits

import dlforge

os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no internet here: hub lookups fail at once instead of retrying
DLFORGE = [sys.executable, "-m", "dlforge.cli"]


def digits_spec(**train: object) -> dict:
    """A fast digits spec: a narrow resnet_small, few epochs."""
    return {
        "name": "digits-test",
        "task": "image_classification",
        "data": {"source": "builtin:digits", "split": {"val": 0.1, "test": 0.2, "seed": 0}},
        "model": {"name": "resnet_small", "kwargs": {"width": 16}},
        "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 3e-3}, "seed": 0, **train},
    }


def with_overrides(spec: dict, overrides: dict) -> dict:
    """`spec` with its top-level sections overridden: a mapping merges into the section, anything else replaces it."""
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli(*args: str, cwd: Path | None = None, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `dlforge` command in a subprocess."""
    proc = subprocess.run([*DLFORGE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dlforge {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def write_digit_folder(root: Path, labels: list[int], per_class: int, size: int = 16, rgb: bool = True) -> Path:
    """Digits as PNG files in root/<label>/<i>.png (upscaled, optionally RGB)."""
    digits = load_digits()
    for label in labels:
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        index = np.flatnonzero(digits.target == label)[:per_class]
        for i in index:
            pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
            image = Image.fromarray(pixels).resize((size, size), Image.NEAREST)
            (image.convert("RGB") if rgb else image).save(root / str(label) / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> dlforge.Run:
    """One finished digits run (4 epochs), shared by the tests that only read it."""
    spec = dlforge.validate_spec(digits_spec(epochs=4))
    return dlforge.train(spec, runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def fit_on_training_set(spec: dict) -> list[dict]:
    """Train `spec` (a dict) through its task and the Trainer, validating on the training set itself:
    the per-epoch history of an overfitting run. Seeded, so earlier tests do not change the start."""
    from dlforge.devices import seed_everything
    from dlforge.registry import TASKS
    from dlforge.spec import validate_spec
    from dlforge.training.trainer import Trainer

    checked = validate_spec(spec)
    seed_everything(checked.train.seed)
    task = TASKS.get(checked.task)(checked)
    prepared = task.prepare()
    trainer = Trainer(checked.train, progress=False).fit(task, prepared.model, prepared.train, prepared.train,
                                                         prepared.meta)
    return trainer.history


# ---------------------------------------------------------------- text: tiny models saved locally, loaded like hub ids

GOOD = ["wonderful", "moving", "brilliant", "funny", "charming", "gripping", "beautiful", "clever"]
BAD = ["dull", "tedious", "clumsy", "boring", "lifeless", "shallow", "awful", "predictable"]


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Short reviews whose label follows the adjectives: easy to learn, never identical."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "fresh" if i % 2 == 0 else "rotten"
        words = rng.choice(GOOD if label == "fresh" else BAD, size=2, replace=False)
        rows.append({"text": f"a {words[0]} and {words[1]} film, take {i}", "label": label})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer, saved with save_pretrained: a stand-in for a hub id."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from dlforge.models.hf import resolve

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve("default"))
    tokenizer.save_pretrained(path)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 and a byte-level BPE tokenizer trained here on a few sentences, saved locally."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [r["text"] for r in sentiment_rows(200)]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>")
    tokenizer.save_pretrained(path)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


# ---------------------------------------------------------------- one tiny run of each kind (export, serving)


def tiny_run_spec(name: str, data: Path, request: pytest.FixtureRequest) -> dict:
    """A tiny one-epoch run of each kind of model: its spec, with its data written under `data`."""
    from tests.tasks.test_detection import detection_spec
    from tests.tasks.test_forecasting import monthly_table
    from tests.tasks.test_forecasting import spec as forecast_spec
    from tests.tasks.test_segmentation import segmentation_spec
    from tests.tasks.test_text_classification import text_spec
    from tests.tasks.test_text_generation import corpus, generation_spec

    if name == "segmentation":
        return segmentation_spec(data={"builtin": {"count": 12, "size": 64, "max_objects": 2}}, train={"epochs": 1})
    if name == "yolo":
        return detection_spec(data={"builtin": {"count": 12, "size": 64, "max_objects": 2}}, train={"epochs": 1})
    if name == "lstm_forecaster":
        monthly_table().to_csv(data / "sales.csv", index=False)
        return forecast_spec(data / "sales.csv", train={"epochs": 1})
    if name == "tabular_classification":
        from tests.test_tabular import tabular_rows, tabular_spec

        return tabular_spec(write_csv(data / "table.csv", tabular_rows(60)))
    reviews = write_csv(data / "reviews.csv", sentiment_rows(24))
    if name == "transformer_text":
        model = {"name": "transformer", "kwargs": {"d_model": 32, "heads": 2, "layers": 1}}
        return text_spec(reviews, model, epochs=1)
    if name == "hf_text":
        return text_spec(reviews, {"name": f"hf:{request.getfixturevalue('tiny_bert')}"}, epochs=1)
    if name == "text_generation":
        spec = generation_spec(corpus(data / "corpus.txt"), request.getfixturevalue("tiny_gpt2"))
        return {**spec, "train": {**spec["train"], "epochs": 1}}
    raise KeyError(name)


@pytest.fixture(scope="session")
def tiny_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """name -> a finished run directory of that kind, trained once for the session (the digits run is a copy of the
    session's `trained_run`: exports write into the run directory)."""
    root = tmp_path_factory.mktemp("export-runs")
    runs: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in runs:
            if name == "image_classification":
                runs[name] = Path(shutil.copytree(request.getfixturevalue("trained_run").path, root / name))
            else:
                (root / name).mkdir()
                spec = dlforge.validate_spec(tiny_run_spec(name, root / name, request))
                runs[name] = dlforge.train(spec, root / name / "runs", progress=False).path
        return runs[name]

    return get
