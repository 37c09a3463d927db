"""Transfer learning: pretrain on digits 0-4, fine-tune on 5-9 from the run, a .safetensors file."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

import dlforge
from dlforge.errors import DlforgeError
from tests.conftest import write_digit_folder


def spec(run_name: str, source: Path, epochs: int, freeze: int = 0, lr: float = 3e-3,
         **model: object) -> dlforge.spec.SpecBase:
    return dlforge.validate_spec({
        "name": run_name, "task": "image_classification",
        "data": {"source": str(source), "split": {"val": 0.2, "test": 0.3, "seed": 0}},
        "model": {"name": "resnet_small", "kwargs": {"width": 16}, **model},
        "train": {"epochs": epochs, "batch_size": 32, "optimizer": {"lr": lr}, "seed": 0,
                  "freeze_backbone_epochs": freeze},
    })


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("digits")
    return (write_digit_folder(root / "low", [0, 1, 2, 3, 4], per_class=150, rgb=False),
            write_digit_folder(root / "high", [5, 6, 7, 8, 9], per_class=100, rgb=False))


@pytest.fixture(scope="module")
def pretrained(folders: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dlforge.Run:
    runs = tmp_path_factory.mktemp("runs")
    return dlforge.train(spec("low", folders[0], epochs=10, lr=1e-2), runs_dir=runs, progress=False)


def test_fine_tune_from_a_run_keeps_the_backbone_and_renews_the_head(
        folders: tuple[Path, Path], pretrained: dlforge.Run, tmp_path: Path) -> None:
    source = load_file(pretrained.weights_path)
    # Training with the backbone frozen throughout: only the head may change.
    run = dlforge.train(spec("high", folders[1], epochs=8, freeze=8, lr=5e-2, pretrained=str(pretrained.path)),
                        runs_dir=tmp_path, progress=False)
    meta = run.read_meta()
    assert meta["classes"] == ["5", "6", "7", "8", "9"]
    # Labels differ (0-4 vs 5-9, both five classes): the head is new, everything else is loaded.
    assert meta["pretrained"]["fresh"] == ["head.bias", "head.weight"]
    tuned = load_file(run.weights_path)
    backbone = [k for k in source if k.startswith("backbone.")]
    assert backbone and all((tuned[k] == source[k]).all() for k in backbone)  # frozen, BN statistics too
    assert not (tuned["head.weight"] == source["head.weight"]).all()
    # Pretrained features make a head trained alone far better than one on random features.
    scratch = dlforge.train(spec("scratch", folders[1], epochs=8, freeze=8, lr=5e-2), runs_dir=tmp_path,
                            progress=False)
    transfer_acc = run.read_eval()["metrics"]["accuracy"]
    scratch_acc = scratch.read_eval()["metrics"]["accuracy"]
    assert transfer_acc > 0.6 and transfer_acc > scratch_acc + 0.15, (transfer_acc, scratch_acc)


def test_fine_tune_from_a_safetensors_file_then_unfreeze(
        folders: tuple[Path, Path], pretrained: dlforge.Run, tmp_path: Path) -> None:
    s = spec("high", folders[1], epochs=4, freeze=1, lr=1e-2, pretrained=str(pretrained.weights_path))
    run = dlforge.train(s, runs_dir=tmp_path, progress=False)
    history = run.read_metrics()
    # Epoch 1: only the head has gradients; from epoch 2 the backbone trains too.
    assert set(history[0]["grad_norm"]) == {"head.weight", "head.bias"}
    assert any(k.startswith("backbone.") for k in history[1]["grad_norm"])
    assert not (load_file(run.weights_path)["backbone.stem.0.weight"] ==
                load_file(pretrained.weights_path)["backbone.stem.0.weight"]).all()
    assert run.read_eval()["metrics"]["accuracy"] > 0.8


def test_same_labels_keep_the_head(folders: tuple[Path, Path], pretrained: dlforge.Run, tmp_path: Path) -> None:
    run = dlforge.train(spec("again", folders[0], epochs=1, pretrained=str(pretrained.path)),
                        runs_dir=tmp_path, progress=False)
    assert run.read_meta()["pretrained"]["fresh"] == []


def test_pretrained_that_fits_nothing_is_an_error(folders: tuple[Path, Path], pretrained: dlforge.Run,
                                                   tmp_path: Path) -> None:
    s = spec("other", folders[1], epochs=1, pretrained=str(pretrained.path), name="timm:resnet10t", kwargs={})
    with pytest.raises(DlforgeError, match=r"none of its .* tensors fits this model"):
        dlforge.train(s, runs_dir=tmp_path, progress=False)
    with pytest.raises(DlforgeError, match=r"expected a run directory, a \.safetensors file"):
        dlforge.train(spec("x", folders[1], 1, pretrained=str(tmp_path / "weights.bin")), runs_dir=tmp_path)
    with pytest.raises(DlforgeError, match=r"model.kwargs: timm:resnet10t does not take \{'width': 16\}"):
        dlforge.train(spec("x", folders[1], 1, name="timm:resnet10t"), runs_dir=tmp_path)
