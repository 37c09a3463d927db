"""The overhead of dlforge's Trainer against a plain, hand-written PyTorch training loop.

Both train the same model (resnet_small, width 32) on the same data (builtin:digits, no
augmentation) with the same seed, optimizer (AdamW, no weight decay on 1-D tensors), cosine
schedule, batch size and epochs, validating after every epoch. The plain loop is the minimal
one a careful person writes to get the same numbers: it reseeds its shuffle generator with
seed + epoch as the Trainer does, so both see the same batches and end on the same weights.

Only the training itself is timed: `Trainer.fit` on one side, the loop (loaders, optimizer,
schedule and metric set-up included) on the other; reading the data and building the model
is not. The two run alternately in one process, in the order AB, BA, AB, ... to cancel drift,
after an untimed one-epoch warm-up of each (imports, first-call costs), which also checks that
both produce the same weights. The target: the Trainer at most 5% slower (the median of the
per-repeat ratios).

    uv run python benchmarks/trainer_overhead.py [--epochs 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

import dlforge
from dlforge.devices import autocast_dtype, seed_everything, select_device
from dlforge.pipeline import callbacks_from_spec
from dlforge.spec import SpecBase
from dlforge.tasks.base import Prepared
from dlforge.tasks.image_classification import ImageClassification
from dlforge.training.trainer import Trainer

TARGET_PERCENT = 5.0


@dataclass
class Result:
    seconds: float
    train_loss: float  # last epoch's mean training loss
    val_loss: float  # last epoch's validation loss
    val_accuracy: float  # last epoch's validation accuracy
    weights: dict[str, torch.Tensor] | None  # the last epoch's weights; None: the Trainer restored an earlier best


def make_spec(epochs: int) -> SpecBase:
    return dlforge.validate_spec({
        "name": "bench",
        "task": "image_classification",
        "data": {"source": "builtin:digits", "augment": {}},  # no augmentation: the same data path for both
        "model": {"name": "resnet_small", "kwargs": {"width": 32}},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 3e-3},
                  "scheduler": "cosine", "seed": 0},
    })


def prepare(spec: SpecBase) -> tuple[ImageClassification, Prepared]:
    """Seeded data and model: both sides start from the same initial weights."""
    seed_everything(spec.train.seed)
    task = ImageClassification(spec)
    return task, task.prepare()


def run_dlforge(spec: SpecBase) -> Result:
    task, p = prepare(spec)
    trainer = Trainer(spec.train, callbacks_from_spec(spec.train), run=None, progress=False)
    start = time.perf_counter()
    trainer.fit(task, p.model, p.train, p.val, p.meta)
    seconds = time.perf_counter() - start
    last = trainer.history[-1]
    weights = p.model.state_dict() if trainer.best_epoch_ == trainer.epoch else None
    return Result(seconds, last["train/loss"], last["val/loss"], last["val/accuracy"], weights)


def run_plain(spec: SpecBase) -> Result:
    _, p = prepare(spec)
    cfg, model = spec.train, p.model
    device = select_device(cfg.device)
    amp = autocast_dtype(cfg.precision, device)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext

    start = time.perf_counter()
    model.to(device)
    generator = torch.Generator()
    pin = device.type == "cuda"
    train_loader = DataLoader(p.train, batch_size=cfg.batch_size, shuffle=True, generator=generator, pin_memory=pin)
    val_loader = DataLoader(p.val, batch_size=cfg.batch_size, pin_memory=pin)
    decay = [w for w in model.parameters() if w.ndim > 1]
    no_decay = [w for w in model.parameters() if w.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.optimizer.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.optimizer.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * len(train_loader))
    accuracy = MulticlassAccuracy(len(p.meta["classes"]), average="micro").to(device)
    for epoch in range(cfg.epochs):
        model.train()
        generator.manual_seed(cfg.seed + epoch)  # the Trainer's shuffle order
        loss_sum, count = torch.zeros((), device=device), 0
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast():
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach().float() * len(y)
            count += len(y)
        train_loss = float(loss_sum / count)

        model.eval()
        accuracy.reset()
        val_loss_sum = torch.zeros((), device=device)
        with torch.no_grad():
            for x, y in val_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast():
                    logits = model(x)
                    val_loss_sum += F.cross_entropy(logits, y).float() * len(y)
                accuracy.update(logits.float(), y)
        val_loss, val_accuracy = float(val_loss_sum / len(p.val)), float(accuracy.compute())
    seconds = time.perf_counter() - start
    return Result(seconds, train_loss, val_loss, val_accuracy, model.state_dict())


def max_weight_diff(a: Result, b: Result) -> float | None:
    if a.weights is None or b.weights is None:
        return None
    return max((a.weights[k].float() - b.weights[k].float()).abs().max().item() for k in a.weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    console = Console(width=120)
    runners: dict[str, Callable[[SpecBase], Result]] = {"dlforge": run_dlforge, "plain": run_plain}

    warm = {name: run(make_spec(1)) for name, run in runners.items()}
    console.print(f"warm-up (1 epoch): dlforge {warm['dlforge'].seconds:.2f} s, plain {warm['plain'].seconds:.2f} s, "
                  f"max |weight difference| {max_weight_diff(warm['dlforge'], warm['plain']):.2e}")

    spec = make_spec(args.epochs)
    table = Table(title=f"dlforge Trainer vs plain PyTorch loop: digits, resnet_small width 32, {args.epochs} epochs, "
                        f"{torch.get_num_threads()} threads")
    for column in ("repeat", "order", "dlforge s", "plain s", "ratio"):
        table.add_column(column, justify="right")
    results: dict[str, list[Result]] = {name: [] for name in runners}
    for i in range(args.repeats):
        order = list(runners) if i % 2 == 0 else list(reversed(runners))
        for name in order:
            results[name].append(runners[name](spec))
        d, p = results["dlforge"][-1], results["plain"][-1]
        table.add_row(str(i + 1), " then ".join(order), f"{d.seconds:.3f}", f"{p.seconds:.3f}",
                      f"{d.seconds / p.seconds:.3f}")

    median = {name: statistics.median(r.seconds for r in rs) for name, rs in results.items()}
    # The median of the paired ratios: each pair ran back to back, so slow drift of the machine cancels.
    ratio = statistics.median(d.seconds / p.seconds for d, p in zip(results["dlforge"], results["plain"], strict=True))
    overhead = (ratio - 1) * 100
    table.add_section()
    table.add_row("median", "", f"{median['dlforge']:.3f}", f"{median['plain']:.3f}", f"{ratio:.3f}")
    console.print(table)

    d, p = results["dlforge"][-1], results["plain"][-1]
    console.print(f"final train loss: dlforge {d.train_loss:.6f}, plain {p.train_loss:.6f}")
    console.print(f"final val loss: dlforge {d.val_loss:.6f}, plain {p.val_loss:.6f}")
    console.print(f"final val accuracy: dlforge {d.val_accuracy:.4f}, plain {p.val_accuracy:.4f}")
    diff = max_weight_diff(d, p)
    console.print("max |weight difference| after the last epoch: "
                  + (f"{diff:.2e}" if diff is not None else "n/a (the Trainer restored an earlier best epoch)"))
    verdict = "[green]PASS[/]" if overhead <= TARGET_PERCENT else "[red]FAIL[/]"
    console.print(f"Trainer overhead: {overhead:+.1f}% (target <= {TARGET_PERCENT:g}%): {verdict}")


if __name__ == "__main__":
    main()
