"""Export: real ONNX (onnxruntime), TorchScript and torch.export files of tiny finished runs, checked against the
torch graph; the ONNX backend of the Predictor against the torch one; the models and tasks that do not export."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_model

import dlforge
from dlforge.data.shapes import make_shapes
from dlforge.errors import DlforgeError
from dlforge.export import FILES, OnnxGraph, export_run
from dlforge.registry import DETECTORS, TASKS
from dlforge.tasks.capabilities import Exportable
from tests.conftest import DLFORGE, task_of

# every task that exports (a tiny run of its example spec), and the text classifier fine-tuned from a hub model
EXPORTABLE = [name for name in TASKS.names() if issubclass(TASKS.get(name), Exportable)] + ["hf_text"]
FORMATS = list(FILES)


def copy_run(run: Path, to: Path, without_export: bool = False) -> Path:
    copy = Path(shutil.copytree(run, to))
    if without_export:
        shutil.rmtree(copy / "export", ignore_errors=True)
    return copy


def assert_same_predictions(a: Any, b: Any, where: str = "") -> None:
    """Equal structure, labels and masks; numbers within 1e-4 (or 1e-5 relative, for forecasts in data units)."""
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same_predictions(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_predictions(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, abs=1e-4, rel=1e-5), where
    else:
        assert a == b, where


def items_of(predictor: dlforge.Predictor, n: int = 12) -> list[Any]:
    items, _ = predictor.evaluation_data()
    return list(items)[:n]


# ---------------------------------------------------------------- every exportable task, every format


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", EXPORTABLE)
def test_export_matches_the_torch_graph(tiny_runs: Callable[[str], Path], name: str, fmt: str) -> None:
    run = tiny_runs(name)
    result = export_run(run, fmt)
    assert result.path == run / "export" / FILES[fmt] and result.path.stat().st_size > 1000
    assert result.max_abs_diff <= 1e-4
    sidecar = json.loads(result.path.with_name(result.path.name + ".json").read_text())
    assert sidecar["format"] == fmt and sidecar["max_abs_diff"] == result.max_abs_diff
    assert sidecar["inputs"] and all(i["shape"][0] == "batch" for i in sidecar["inputs"] + sidecar["outputs"])
    assert [o["name"] for o in sidecar["outputs"]] == [o["name"] for o in result.outputs]
    assert sidecar["versions"]["torch"] == torch.__version__
    if fmt == "onnx":
        assert sidecar["opset"] >= 18 and "onnxruntime" in sidecar["versions"]
    if TASKS.get(task_of(name)).wire.kind == "text":  # texts pad to their batch's longest: the token axis varies too
        assert [i["shape"] for i in sidecar["inputs"]] == [["batch", "tokens"]] * 2
    assert sorted(p.name for p in result.path.parent.iterdir() if p.name.startswith(".")) == []  # no temp files


@pytest.mark.parametrize("name", EXPORTABLE)
def test_onnx_takes_other_batch_sizes_and_the_onnx_backend_predicts_as_torch(
        tiny_runs: Callable[[str], Path], name: str) -> None:
    run = tiny_runs(name)
    torch_predictor = dlforge.load(run)
    onnx_predictor = dlforge.load(run, backend="onnx")  # exported here unless the test above did it
    assert onnx_predictor.backend == "onnx" and onnx_predictor.model is None
    # straight through onnxruntime: batches of 1 and 5 (the export traced 2), against the torch graph
    task, meta = torch_predictor.capability(Exportable), torch_predictor.meta
    for batch in (1, 5):
        inputs = task.example_inputs(meta, batch)
        with torch.no_grad():
            expected = torch_predictor.graph(*inputs.values())
        got = onnx_predictor.graph(*inputs.values())
        assert got.shape == expected.shape and got.shape[0] == batch
        assert float((got - expected).abs().max()) <= 1e-4
    # whole predictions: pre- and post-processing in torch around either graph
    items = items_of(torch_predictor)
    by_torch, by_onnx = torch_predictor.predict(items), onnx_predictor.predict(items)
    assert len(by_torch) == len(items)
    assert_same_predictions(by_torch, by_onnx)


def test_tiled_detection_through_the_onnx_graph(tiny_runs: Callable[[str], Path], tmp_path: Path) -> None:
    """A detector served tile by tile: every tile goes through the exported graph, boxes merge as with torch."""
    run = copy_run(tiny_runs("object_detection"), tmp_path / "tiled")
    meta = json.loads((run / "meta.json").read_text())
    meta["preprocessing"]["tiling"] = {"tile": 64, "overlap": 0.25}
    (run / "meta.json").write_text(json.dumps(meta))
    images = list(make_shapes(count=2, size=150, seed=5, min_objects=4, max_objects=6).images)
    by_torch = dlforge.load(run).predict(images, conf=0.0)
    by_onnx = dlforge.load(run, backend="onnx").predict(images, conf=0.0)
    assert sum(len(p["objects"]) for p in by_torch) > 0
    assert max(o["box"][2] for p in by_torch for o in p["objects"]) > 64  # tiles beyond the first were mapped back
    assert_same_predictions(by_torch, by_onnx)


# ---------------------------------------------------------------- what does not export, and broken exports


def test_text_generation_does_not_export(tiny_runs: Callable[[str], Path]) -> None:
    run = tiny_runs("text_generation")
    with pytest.raises(DlforgeError, match=r"text_generation models cannot be exported: generation is a loop.*"
                                           r"torch backend"):
        export_run(run, "onnx")
    with pytest.raises(DlforgeError, match="cannot be exported"):
        dlforge.load(run, backend="onnx")
    assert not (run / "export" / "model.onnx").exists()
    assert dlforge.load(run).predict(["a wonderful"], max_new_tokens=2)[0]["new_tokens"] >= 1  # torch serving


def test_faster_rcnn_does_not_export_but_serves_with_torch(tiny_runs: Callable[[str], Path], tmp_path: Path) -> None:
    # The YOLO run's copy with a Faster R-CNN in its place: same task, classes and sizes, another detector.
    run = copy_run(tiny_runs("object_detection"), tmp_path / "frcnn", without_export=True)
    meta = json.loads((run / "meta.json").read_text())
    meta.update(model="fasterrcnn_mobilenet_v3_large_fpn", model_kwargs={})
    (run / "meta.json").write_text(json.dumps(meta))
    torch.manual_seed(0)
    detector = DETECTORS.get(meta["model"])(num_classes=len(meta["classes"]), image_size=64)
    save_model(detector, str(run / "model.safetensors"))
    for fmt in FORMATS:
        with pytest.raises(DlforgeError, match=r"fasterrcnn_mobilenet_v3_large_fpn cannot be exported: its inference "
                                               r"graph returns a list, not tensors.*yolo_n, yolo_s\) export"):
            export_run(run, fmt)
    assert not (run / "export").exists() or not any((run / "export").iterdir())
    predicted = dlforge.load(run).predict(list(make_shapes(count=1, size=64, seed=1).images), conf=0.0)
    assert isinstance(predicted[0]["objects"], list)


def test_missing_export_is_made_on_demand_and_a_corrupt_one_is_named(tiny_runs: Callable[[str], Path], tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    run = copy_run(tiny_runs("image_classification"), tmp_path / "fresh", without_export=True)
    with caplog.at_level(logging.INFO, logger="dlforge"):
        predictor = dlforge.load(run, backend="onnx")
    assert "no ONNX export yet: exporting it now" in caplog.text
    assert (run / "export" / "model.onnx").exists() and (run / "export" / "model.onnx.json").exists()
    assert len(predictor.predict(items_of(predictor, 3))) == 3

    (run / "export" / "model.onnx").write_bytes(b"\x00 not a model \xff" * 10)
    with pytest.raises(DlforgeError, match=r"model\.onnx: cannot load the ONNX model.*dlforge export RUN --format"):
        dlforge.load(run, backend="onnx")
    with pytest.raises(DlforgeError, match=r"nowhere\.onnx: cannot load the ONNX model"):
        OnnxGraph(tmp_path / "nowhere.onnx")


def test_an_export_of_other_weights_is_made_again(tiny_runs: Callable[[str], Path], tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    run = copy_run(tiny_runs("image_classification"), tmp_path / "changed", without_export=True)
    export_run(run, "onnx")
    torch_predictor = dlforge.load(run)
    with torch.no_grad():
        for p in torch_predictor.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model(torch_predictor.model, str(run / "model.safetensors"))  # as if the weights were replaced
    with caplog.at_level(logging.INFO, logger="dlforge"):
        predictor = dlforge.load(run, backend="onnx")
    assert "exported from other weights" in caplog.text
    sidecar = json.loads((run / "export" / "model.onnx.json").read_text())
    assert sidecar["weights_sha256"] == dlforge.Run(run).weights_digest()
    items = items_of(predictor, 4)
    got, want = predictor.outputs(items), torch_predictor.outputs(items)
    assert torch.allclose(got, want, atol=1e-4)


def test_an_export_outside_the_tolerance_is_not_kept(tiny_runs: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "strict" / "model.onnx"
    handler = signal.getsignal(signal.SIGTERM)
    # onnxruntime's fused kernels sum in another order than torch: differences of ~1e-7, never exactly none
    with pytest.raises(DlforgeError, match=r"the onnx export differs from the torch model by up to .* \(tolerance "
                                           r"1e-12\) at batch 3; nothing was written"):
        export_run(tiny_runs("image_classification"), "onnx", out=out, atol=1e-12)
    assert list(out.parent.iterdir()) == []  # neither the file nor its temporary
    assert signal.getsignal(signal.SIGTERM) == handler  # what the export set while writing is undone


def test_a_terminated_export_leaves_no_temporary_file(tiny_runs: Callable[[str], Path], tmp_path: Path) -> None:
    """`dlforge export` stopped by SIGTERM (kill, timeout, a stopped container) while it writes: it exits 143 and
    leaves nothing, not even the temporary file it was writing (which `dlforge package` then copied)."""
    run = copy_run(tiny_runs("image_classification"), tmp_path / "run", without_export=True)
    export = run / "export"
    proc = subprocess.Popen([*DLFORGE, "export", str(run), "--format", "onnx"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        while not list(export.glob(".model.onnx.*.tmp")):  # the write has begun
            assert proc.poll() is None, f"the export ended before it wrote: {proc.stderr.read()}"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(export.iterdir()) == []


def test_bad_arguments_are_named(tiny_runs: Callable[[str], Path]) -> None:
    run = tiny_runs("image_classification")
    with pytest.raises(DlforgeError, match="export format 'tflite': choose onnx, torchscript, torch-export"):
        export_run(run, "tflite")  # type: ignore[arg-type]
    with pytest.raises(DlforgeError, match="backend 'tensorrt': choose torch or onnx"):
        dlforge.load(run, backend="tensorrt")  # type: ignore[arg-type]
    result = export_run(run, "torch-export", out=run / "elsewhere" / "m.pt2")  # anywhere: --out
    assert result.max_abs_diff <= 1e-4 and (run / "elsewhere" / "m.pt2.json").exists()
