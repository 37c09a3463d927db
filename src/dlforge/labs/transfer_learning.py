"""Transfer learning: test accuracy against the number of labelled examples for a pretrained transformer,
the same architecture from random weights, and TF-IDF + logistic regression.

Data: the Rotten Tomatoes review sentences (`builtin:rotten_tomatoes`, fresh vs rotten), exact duplicate
texts dropped. One stratified test split (20%, seeded) is held out first and never trained on; a fixed
validation set of `val_size` texts is drawn from the rest, and the remaining pool is put in one seeded
order whose every prefix is stratified, so the training subsets n = 50, 100, ... are nested: the
subset of 100 holds the subset of 50.

For each n, the three methods see the same n training texts and the same validation set, and are scored
on the same test texts:

* pretrained: `hf:default` (all-MiniLM-L6-v2, 22.7M parameters) fine-tuned, AdamW lr 1e-4, linear
  warm-up over 10% of the steps then linear decay to 0. (At n = 50 and 200, lr 1e-4 for at least 100
  steps reached a best validation accuracy of 0.635 and 0.690, against 0.595 and 0.645 for 5e-5 and 60
  steps. Its sentence training pooled the mean of the tokens; the classifier reads the [CLS] pooler, which
  has more to learn);
* random: the same architecture and schedule from fresh weights (`model.init: random`), lr 2e-4;
* TF-IDF + LR: word 1-2 grams with sublinear tf, then an L2 logistic regression (scikit-learn).

Both transformers train for `epochs` epochs, or more for small n: at least `min_steps` optimizer steps.
The validation set picks each transformer's best epoch (the Trainer restores it) and the regression's
C from a small grid: one choice per method, made on the same texts. The transformers train through
`dlforge.train`, on a CSV per n holding its training texts and the validation texts (written to
`data/`), laid out so that the task's own seeded split puts exactly those validation texts in its
validation split; each finished run is then scored on the test texts (`data/test.csv`) by its Predictor.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import DlforgeError
from dlforge.registry import LABS

log = logging.getLogger("dlforge")

SOURCE = "builtin:rotten_tomatoes"
METHODS = {"pretrained": "MiniLM, pretrained, fine-tuned", "random": "MiniLM architecture, random init",
           "tfidf": "TF-IDF + logistic regression"}


# ---------------------------------------------------------------- the baseline


def tfidf_logreg_model(C: float = 16.0) -> Any:
    """An unfitted scikit-learn pipeline: TF-IDF over word 1-2 grams (sublinear tf) and an L2 logistic
    regression with inverse regularisation `C`. The default, 16, was the best of (0.25, 1, 4, 16) on the
    validation split of `builtin:rotten_tomatoes` (the text task's default split, seed 0; trained on its
    3,405 training texts, validation accuracy 0.706 / 0.700 / 0.700 / 0.713)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                         LogisticRegression(C=C, max_iter=2000))


def tfidf_logreg(train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str],
                 C: float = 16.0) -> list[str]:
    """Fit TF-IDF + logistic regression (`tfidf_logreg_model`) on the training texts; the predicted label
    of each test text."""
    model = tfidf_logreg_model(C).fit(list(train_texts), list(train_labels))
    return [str(label) for label in model.predict(list(test_texts))]


def scores(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of predicted labels (scikit-learn), the same for every method."""
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(truth, predicted)),
            "f1_macro": float(f1_score(truth, predicted, average="macro"))}


# ---------------------------------------------------------------- splits


def stratified_order(targets: np.ndarray, seed: int) -> np.ndarray:
    """A seeded order of the positions 0…len−1 whose every prefix is stratified: each class is shuffled, and
    its k-th member is placed at (k + ½) / (class size), so a prefix of n holds n·share ± 1 of every class.
    Prefixes of one order are nested subsets."""
    rng = np.random.default_rng(seed)
    keys = np.empty(len(targets))
    for c in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == c))
        keys[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((rng.random(len(targets)), keys))  # by key, ties (equal-sized classes) at random


def split_layout(train_targets: np.ndarray, val_targets: np.ndarray, seed: int, tries: int = 200
                 ) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Where to put `train` and `val` rows in one table so that `stratified_split(targets, val, 0, split_seed)`
    (the text task's own split, no test part) gives exactly the val rows as its validation split.

    Returns (train positions, val positions, val fraction, split seed). That split draws ⌈val·N⌉ rows, its
    per-class counts fixed by the class totals and the seed; the first seed from `seed` whose counts are the
    val rows' is taken, and the rows of each class then fill that class's positions. This needs the train and
    val rows to have the same class shares up to rounding, as stratified draws do; otherwise it raises.
    """
    from dlforge.data.split import stratified_split

    targets = np.concatenate([train_targets, val_targets])
    k = int(targets.max()) + 1
    want = np.bincount(val_targets, minlength=k)
    fraction = (len(val_targets) - 0.5) / len(targets)  # ⌈fraction · N⌉ = len(val) despite rounding
    for split_seed in range(seed, seed + tries):
        train_pos, val_pos, _ = stratified_split(targets, fraction, 0.0, split_seed)
        if len(val_pos) == len(val_targets) and np.array_equal(np.bincount(targets[val_pos], minlength=k), want):
            return train_pos, val_pos, fraction, split_seed
    raise DlforgeError(f"no split seed in {seed}…{seed + tries - 1} puts exactly the {len(val_targets)} validation "
                       f"rows in the validation split (class counts {want.tolist()})")


def layout_rows(train_rows: np.ndarray, val_rows: np.ndarray, targets: np.ndarray, seed: int
                ) -> tuple[np.ndarray, float, int]:
    """Row ids (into `targets`) in file order, so that the task's split with (val fraction, split seed) picks
    `val_rows` for validation and trains on `train_rows`; see `split_layout`."""
    y = np.concatenate([targets[train_rows], targets[val_rows]])
    train_pos, val_pos, fraction, split_seed = split_layout(targets[train_rows], targets[val_rows], seed)
    order = np.empty(len(y), dtype=np.int64)
    for rows, positions in ((train_rows, train_pos), (val_rows, val_pos)):
        for c in np.unique(y):
            order[positions[y[positions] == c]] = rows[targets[rows] == c]
    return order, fraction, split_seed


def _read(source: str) -> tuple[list[str], list[str], int]:
    """Texts and labels of `source`, exact duplicate texts dropped (the first kept): (texts, labels, dropped)."""
    from dlforge.data.texts import clean, read_texts

    table = clean(read_texts(source), "error")
    seen: set[str] = set()
    keep = []
    for i, text in enumerate(table.texts):
        if text not in seen:
            seen.add(text)
            keep.append(i)
    return [table.texts[i] for i in keep], [table.labels[i] for i in keep], len(table.texts) - len(keep)


# ---------------------------------------------------------------- the lab


@LABS.register("transfer-learning")
def transfer_learning(out: Path, quick: bool = False, seed: int = 0, **overrides: Any) -> tuple[dict[str, Any], str]:
    """Transfer learning: test accuracy against the number of labelled examples for a pretrained transformer, the same architecture from random weights, and TF-IDF + logistic regression."""  # noqa: E501
    config: dict[str, Any] = {
        "source": SOURCE, "seed": seed, "test": 0.2, "test_size": None, "val_size": 200,
        "sizes": [50, 100, 200, 500, 1000], "all": True, "max_length": 64, "batch_size": 16, "epochs": 3,
        "min_steps": 100, "warmup": 0.1, "weight_decay": 0.01, "lr": {"pretrained": 1e-4, "random": 2e-4},
        "C_grid": [0.25, 1.0, 4.0, 16.0], "threads": None}
    if quick:  # the mechanics, not the accuracies: two sizes, a small test set, a few steps
        config.update(sizes=[50, 200], all=False, test_size=200, val_size=32, epochs=1, min_steps=4)
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise DlforgeError(f"transfer-learning: unknown option(s) {', '.join(unknown)}; options: {', '.join(config)}")
    for key, value in overrides.items():  # e.g. `-o lr={random: 5e-4}` keeps the pretrained lr
        config[key] = {**config[key], **value} if isinstance(config[key], dict) and isinstance(value, dict) else value
    config["quick"] = quick
    # One CPU core left to the rest of the machine: on 2 busy cores a MiniLM training step took 0.55 s with
    # one thread and 2.8–4.4 s with two (the threads wait on each other while another process holds a core).
    import torch

    threads = torch.get_num_threads()
    config["threads"] = config["threads"] or max(1, threads - 1)
    torch.set_num_threads(config["threads"])
    try:
        return _experiment(config, Path(out))
    finally:
        torch.set_num_threads(threads)


def _experiment(config: dict[str, Any], out: Path) -> tuple[dict[str, Any], str]:
    import pandas as pd

    from dlforge.data.split import stratified_split

    seed = config["seed"]
    texts, labels, duplicates = _read(config["source"])
    classes = sorted(set(labels))
    targets = np.array([classes.index(label) for label in labels])
    pool, _, test = stratified_split(targets, 0.0, config["test"], seed)
    if config["test_size"]:  # quick: a stratified part of the same test split
        test = np.sort(test[stratified_order(targets[test], seed + 3)[: config["test_size"]]])
    order = stratified_order(targets[pool], seed + 1)
    val, pool = pool[order[: config["val_size"]]], pool[order[config["val_size"]:]]  # pool: in training order
    sizes = [n for n in config["sizes"] if n < len(pool)] + ([len(pool)] if config["all"] else [])
    if not sizes:
        raise DlforgeError(f"transfer-learning: no training size below the pool of {len(pool)} texts")

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)

    def frame(rows: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"text": [texts[i] for i in rows], "label": [labels[i] for i in rows]})

    frame(test).to_csv(data / "test.csv", index=False)
    test_texts, test_labels = [texts[i] for i in test], [labels[i] for i in test]
    log.info("transfer-learning: %d texts (%d duplicates dropped): test %d, validation %d, training pool %d",
             len(texts), duplicates, len(test), len(val), len(pool))

    rows: list[dict[str, Any]] = []
    files = []  # per n: the CSV and the split (data.split) that hands dlforge its training and validation rows
    with tempfile.TemporaryDirectory(prefix="dlforge-tl-") as runs_dir:
        for n in sizes:
            train = pool[:n]  # nested: every subset extends the one before
            csv = data / f"train_{n}.csv"  # the training texts and the validation texts, as dlforge reads them
            file_rows, fraction, split_seed = layout_rows(train, val, targets, seed)
            frame(file_rows).to_csv(csv, index=False)
            files.append({"n": n, "csv": f"data/{csv.name}", "split": {"val": fraction, "test": 0.0,
                                                                      "seed": split_seed}})
            for method in ("pretrained", "random"):
                rows.append(_transformer(method, n, csv, fraction, split_seed, config, test_texts, test_labels,
                                         Path(runs_dir)))
            rows.append(_tfidf(n, [texts[i] for i in train], [labels[i] for i in train],
                               [texts[i] for i in val], [labels[i] for i in val], test_texts, test_labels, config))
            for r in rows[-3:]:
                r["all"] = n == len(pool)

    majority = max(test_labels.count(c) for c in classes) / len(test_labels)
    results = {"config": config, "classes": classes, "sizes": sizes, "rows": rows, "training_files": files,
               "data": {"texts": len(texts), "duplicates_dropped": duplicates, "test": len(test), "val": len(val),
                        "pool": len(pool), "test_csv": "data/test.csv", "majority_accuracy": majority},
               "headline": _headline(rows, sizes, len(pool)),
               "files": ["learning_curve.png", "summary.md", "results.json", "data/test.csv",
                         *[f"data/train_{n}.csv" for n in sizes]]}
    _plot(rows, sizes, len(pool), majority, out / "learning_curve.png")
    return results, _summary(rows, sizes, len(pool), results["data"], config)


def _transformer(method: str, n: int, csv: Path, fraction: float, split_seed: int, config: dict[str, Any],
                 test_texts: list[str], test_labels: list[str], runs_dir: Path) -> dict[str, Any]:
    """Train `hf:default` (pretrained or random init) on the CSV through `dlforge.train`; score it on the test texts."""
    from dlforge.pipeline import train
    from dlforge.predictor import Predictor
    from dlforge.spec import validate_spec

    steps_per_epoch = math.ceil(n / config["batch_size"])
    epochs = max(config["epochs"], math.ceil(config["min_steps"] / steps_per_epoch))
    spec = {"name": f"tl-{method}-n{n}", "task": "text_classification",
            "data": {"source": str(csv.resolve()), "max_length": config["max_length"],
                     "split": {"val": fraction, "test": 0.0, "seed": split_seed}},
            "model": {"name": "hf:default", "init": method if method == "random" else "pretrained"},
            "train": {"checkpoint": False, "epochs": epochs, "batch_size": config["batch_size"], "seed": config["seed"],
                      "scheduler": "linear", "warmup": config["warmup"],
                      "optimizer": {"name": "adamw", "lr": config["lr"][method],
                                    "weight_decay": config["weight_decay"]},
                      "monitor": {"metric": "val/accuracy", "mode": "max"}}}
    log.info("transfer-learning: n=%d, %s: %d epochs of %d steps, lr %g", n, method, epochs, steps_per_epoch,
             config["lr"][method])
    run = train(validate_spec(spec), runs_dir=runs_dir, progress=False)
    try:
        meta = run.read_meta()
        expected = {"train": n, "val": config["val_size"], "test": 0}
        if meta["sizes"] != expected:  # the layout did not give the intended rows: never score such a run
            raise DlforgeError(f"transfer-learning: run {run.path} split its data as {meta['sizes']}, not {expected}")
        history = run.read_metrics()
        predictor = Predictor.from_run(run.path)
        started = time.perf_counter()
        predicted = [p["label"] for p in predictor.predict(test_texts)]
        result = {"n": n, "method": method, **scores(test_labels, predicted),
                  "train_time_s": round(sum(row["time_s"] for row in history), 1),
                  "test_time_s": round(time.perf_counter() - started, 1), "epochs": len(history),
                  "steps": history[-1]["step"], "best_epoch": meta["best_epoch"],
                  "train_loss": history[-1]["train/loss"],
                  "val_accuracy": max(row["val/accuracy"] for row in history), "lr": config["lr"][method]}
    finally:
        shutil.rmtree(run.path, ignore_errors=True)  # weights and checkpoints: hundreds of MB per run
    log.info("transfer-learning: n=%d, %s: test accuracy %.3f (%.0f s)", n, method, result["accuracy"],
             result["train_time_s"])
    return result


def _tfidf(n: int, train_texts: list[str], train_labels: list[str], val_texts: list[str], val_labels: list[str],
           test_texts: list[str], test_labels: list[str], config: dict[str, Any]) -> dict[str, Any]:
    """TF-IDF + LR with C picked on the validation texts (the first best of the grid), scored on the test texts."""
    started = time.perf_counter()
    val_accuracy = {C: scores(val_labels, tfidf_logreg(train_texts, train_labels, val_texts, C))["accuracy"]
                    for C in config["C_grid"]}
    C = max(config["C_grid"], key=lambda c: val_accuracy[c])  # ties: the first, the smallest C
    model = tfidf_logreg_model(C).fit(train_texts, train_labels)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    predicted = [str(label) for label in model.predict(test_texts)]
    return {"n": n, "method": "tfidf", **scores(test_labels, predicted), "train_time_s": round(seconds, 2),
            "test_time_s": round(time.perf_counter() - started, 2), "C": C, "val_accuracy": val_accuracy[C]}


# ---------------------------------------------------------------- figure, headline, summary


def _row(rows: list[dict[str, Any]], n: int, method: str) -> dict[str, Any]:
    return next(r for r in rows if r["n"] == n and r["method"] == method)


def _name(n: int, pool: int) -> str:
    return f"all ({n})" if n == pool else str(n)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _lr(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-")  # 1e-4, not 0.0001


def _headline(rows: list[dict[str, Any]], sizes: list[int], pool: int) -> dict[str, str]:
    return {f"n = {_name(n, pool)}": "  ".join(f"{m} {_row(rows, n, m)['accuracy']:.3f}" for m in METHODS)
            for n in sizes}


def _plot(rows: list[dict[str, Any]], sizes: list[int], pool: int, majority: float, path: Path) -> None:
    from dlforge.plots import plt, save

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (method, name) in enumerate(METHODS.items()):
        ax.plot(sizes, [_row(rows, n, method)["accuracy"] for n in sizes], marker="o", color=f"C{i}", label=name)
    ax.axhline(majority, color="grey", ls=":", lw=1, label=f"majority class ({majority:.3f})")
    if sizes[-1] == pool:
        best = max(_row(rows, pool, m)["accuracy"] for m in METHODS)
        ax.annotate(f"all {pool} training texts", (pool, best), textcoords="offset points", xytext=(-8, -6),
                    ha="right", va="top", fontsize=8)
    ax.set_xscale("log")
    ax.set_xticks(sizes, [_name(n, pool) for n in sizes], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("labelled training examples, n (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Rotten Tomatoes: accuracy against labelled examples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def _summary(rows: list[dict[str, Any]], sizes: list[int], pool: int, data: dict[str, Any],
             config: dict[str, Any]) -> str:
    lines = ["# Transfer learning", "",
             f"Rotten Tomatoes sentences ({data['texts']} after dropping {data['duplicates_dropped']} duplicate "
             f"texts): every method is scored on the same {data['test']} test texts (majority class "
             f"{data['majority_accuracy']:.3f}), chooses its epoch or C on the same {data['val']} validation "
             "texts and trains on the same nested, stratified subsets of the remaining pool.", "",
             "Accuracy / macro-F1 on the test texts, and training time (transformers: training and validation "
             "epochs; TF-IDF + LR: its fits over the C grid):", "",
             "| n | " + " | ".join(METHODS.values()) + " |", "|---|" + "---|" * len(METHODS)]
    for n in sizes:
        cells = [f"{r['accuracy']:.3f} / {r['f1_macro']:.3f} ({_seconds(r['train_time_s'])})"
                 for r in (_row(rows, n, m) for m in METHODS)]
        lines.append(f"| {_name(n, pool)} | " + " | ".join(cells) + " |")
    gap = {n: _row(rows, n, "pretrained")["accuracy"] - _row(rows, n, "tfidf")["accuracy"] for n in sizes}
    scratch = {n: _row(rows, n, "random")["accuracy"] - _row(rows, n, "tfidf")["accuracy"] for n in sizes}
    ahead = [n for n in sizes if gap[n] > 0]
    lines += ["",
              "Pretrained minus TF-IDF + LR, in accuracy points: "
              + ", ".join(f"{_name(n, pool)}: {100 * gap[n]:+.1f}" for n in sizes)
              + f" (the pretrained model ahead at {len(ahead)} of {len(sizes)} sizes). "
              "The same architecture from random weights minus TF-IDF + LR: "
              + ", ".join(f"{_name(n, pool)}: {100 * scratch[n]:+.1f}" for n in sizes) + "; its training loss "
              "in the last epoch (ln 2 = 0.693 for a guess between two classes): "
              + ", ".join(f"{_name(n, pool)}: {_row(rows, n, 'random')['train_loss']:.3f}" for n in sizes) + ".",
              f"Transformers: {config['batch_size']} texts per batch, at most {config['max_length']} tokens, "
              f"{config['epochs']} epoch(s) or at least {config['min_steps']} optimizer steps, AdamW (lr "
              f"{_lr(config['lr']['pretrained'])} pretrained, {_lr(config['lr']['random'])} random; weight decay "
              f"{config['weight_decay']}), warm-up over {config['warmup']:.0%} of the steps then linear decay, "
              f"the best validation epoch kept. TF-IDF + LR: C from {config['C_grid']} on the validation texts. "
              f"Seed {config['seed']}; {config['threads']} CPU thread(s)"
              f"{'; quick run' if config['quick'] else ''}.",
              "The training CSVs given to dlforge (training and validation texts) and the test texts are in "
              "data/; see learning_curve.png.", ""]
    return "\n".join(lines)
