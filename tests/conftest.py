"""Shared fixtures: small specs, image folders made from the digits, one trained run."""

from __future__ import annotations

import os
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
from dlforge.data.examples import reviews

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

def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Short reviews whose label follows the adjectives: easy to learn, never identical (the text examples' data)."""
    return reviews(n, seed)


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


# ---------------------------------------------------------------- one tiny run of each task (contract, export, serving)

# Tiny runs besides each task's own example spec: name -> (the task whose example spec it starts from, the overrides
# of its sections, made with the session's fixtures; see `with_overrides`).
VARIANTS: dict[str, tuple[str, Callable[[pytest.FixtureRequest], dict]]] = {
    # the text classifier fine-tuned from a (tiny, local) hub model, beside the example's from-scratch transformer
    "hf_text": ("text_classification",
                lambda request: {"model": {"name": f"hf:{request.getfixturevalue('tiny_bert')}", "kwargs": {}}}),
}


def task_of(name: str) -> str:
    """The task of tiny run `name`: a registered task's name, or a variant's task."""
    return VARIANTS[name][0] if name in VARIANTS else name


def tiny_run_spec(name: str, folder: Path, request: pytest.FixtureRequest) -> dict:
    """The spec of tiny run `name`: the task's own example spec (`Task.example_spec`, its data written under
    `folder`), or a variant of one."""
    from dlforge.registry import TASKS

    spec = TASKS.get(task_of(name)).example_spec(folder)
    return with_overrides(spec, VARIANTS[name][1](request)) if name in VARIANTS else spec


@pytest.fixture(scope="session")
def tiny_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """name (a registered task, or one of `VARIANTS`) -> a finished run directory of its example spec, trained once
    for the session and shared (exports write into the run directory)."""
    root = tmp_path_factory.mktemp("tiny-runs")
    runs: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in runs:
            (root / name).mkdir()
            spec = dlforge.validate_spec(tiny_run_spec(name, root / name, request))
            runs[name] = dlforge.train(spec, root / name / "runs", progress=False).path
        return runs[name]

    return get
