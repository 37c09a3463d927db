"""Detection quality and CPU speed on `builtin:shapes` (128x128; circles, squares, triangles).

Each model trains from scratch through `dlforge.train` (the same path as `dlforge train`) on
the same split of 720 images (504 for training), then its test split (144 images) is scored
with COCO mAP@0.5 and mAP@0.5:0.95 (torchmetrics), and its inference speed is measured through
the Predictor: CPU images per second at batch 16 (thresholded predictions, preprocessing
included), best of 3. Training time is wall-clock `fit` time on this machine's cores.

Target: yolo_n reaches mAP@0.5 >= 0.90 after at most 10 minutes of training on 2 CPU cores.

    uv run python benchmarks/detection.py [--models yolo_n yolo_s fasterrcnn_mobilenet_v3_large_fpn]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

import dlforge
from _speed import size_and_speed  # benchmarks/_speed.py, beside this script
from dlforge.spec import validate_spec

TARGET_MAP50, TARGET_MINUTES = 0.90, 10.0

# Per model: epochs, batch size and learning rate chosen to fit the 10-minute budget on 2 cores.
RECIPES = {
    "yolo_n": {"epochs": 60, "batch_size": 16, "lr": 2e-3},
    "yolo_s": {"epochs": 30, "batch_size": 16, "lr": 2e-3},
    "fasterrcnn_mobilenet_v3_large_fpn": {"epochs": 12, "batch_size": 8, "lr": 1e-3},
}


def spec_for(model: str, epochs: int, batch_size: int, lr: float) -> dict:
    return {
        "name": f"bench-{model}",
        "task": "object_detection",
        "data": {"source": "builtin:shapes", "builtin": {"count": 720, "size": 128, "seed": 0}, "image_size": 128,
                 "split": {"val": 0.1, "test": 0.2, "seed": 0},
                 "augment": {"hflip": True, "scale": [0.7, 1.3], "color_jitter": 0.2}},
        "model": {"name": model},
        "train": {"epochs": epochs, "batch_size": batch_size, "scheduler": "cosine", "seed": 0,
                  "optimizer": {"name": "adamw", "lr": lr, "weight_decay": 5e-4}, "grad_clip": 10.0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    args = parser.parse_args()
    console = Console()
    table = Table(title=f"builtin:shapes 128x128, {torch.get_num_threads()} CPU threads")
    for col in ("model", "params (M)", "epochs", "train min", "mAP@0.5", "mAP@0.5:0.95", "CPU img/s"):
        table.add_column(col, justify="right" if col != "model" else "left")
    verdicts = []
    with tempfile.TemporaryDirectory() as runs:
        for model in args.models:
            recipe = {**RECIPES[model], **({"epochs": args.epochs} if args.epochs else {})}
            spec = validate_spec(spec_for(model, **recipe))
            start = time.perf_counter()
            run = dlforge.train(spec, runs_dir=runs)
            train_minutes = sum(row["time_s"] for row in run.read_metrics()) / 60  # training + validation
            total = time.perf_counter() - start
            ev = run.read_eval()["metrics"]
            params, speed = size_and_speed(run)
            table.add_row(model, f"{params:.2f}", str(recipe["epochs"]), f"{train_minutes:.1f}",
                          f"{ev['map_50']:.3f}", f"{ev['map']:.3f}", f"{speed:.0f}")
            console.log(f"{model}: done in {total / 60:.1f} min")
            if model == "yolo_n":
                ok = ev["map_50"] >= TARGET_MAP50 and train_minutes <= TARGET_MINUTES
                verdicts.append(f"yolo_n: mAP@0.5 {ev['map_50']:.3f} (target >= {TARGET_MAP50}) in "
                                f"{train_minutes:.1f} min (target <= {TARGET_MINUTES:.0f}): {'PASS' if ok else 'FAIL'}")
    console.print(table)
    for v in verdicts:
        console.print(v)


if __name__ == "__main__":
    main()
