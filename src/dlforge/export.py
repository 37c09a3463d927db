"""Export a finished run's inference graph (ONNX, TorchScript, torch.export) and run ONNX with onnxruntime.

    export_run(run, "onnx")  ->  <run>/export/model.onnx  and  <run>/export/model.onnx.json

What is exported is the task's graph (`Task.graph`): the tensor-in, tensor-out part of inference (logits,
decoded boxes before NMS, scaled quantiles). Pre- and post-processing (decoding images, tokenising, NMS,
upsampling, scaling back) stay in the task, in torch, whichever backend runs the graph, so a Predictor on
the ONNX export gives the torch Predictor's predictions. Every export is checked before it is kept: the
exported file and the torch graph run on the same inputs, at a batch size other than the traced one, and
must agree within `atol`; the file is written under a temporary name and renamed only then. A failure, Ctrl-C
or SIGTERM removes the temporary file (SIGKILL cannot: `dlforge package` copies only the files it names).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from dlforge._io import atomic_write, atomic_write_json
from dlforge.errors import DlforgeError, first_line
from dlforge.onnx_backend import ONNX_FILE, OnnxGraph, stale_reason
from dlforge.predictor import Predictor
from dlforge.run import Run
from dlforge.tasks.capabilities import Exportable

log = logging.getLogger("dlforge")

Format = Literal["onnx", "torchscript", "torch-export"]
FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "torch-export": "model.pt2"}
EXAMPLE_BATCH, CHECK_BATCH = 2, 3  # traced at 2, checked at 3: a graph that fixed its batch size fails the check
Tensors = dict[str, torch.Tensor]


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # between the exported graph and the torch graph, at batch CHECK_BATCH
    inputs: list[dict[str, Any]]  # {name, shape (dynamic axes by name, e.g. "batch"), dtype}
    outputs: list[dict[str, Any]]
    seconds: float


def export_run(run_dir: str | os.PathLike | Run, fmt: Format, out: str | os.PathLike | None = None,
               atol: float = 1e-4) -> ExportResult:
    """Export the run's graph as `fmt` to `out` (default `<run>/export/<file>`), with a JSON sidecar beside it."""
    start = time.perf_counter()
    if fmt not in FILES:
        raise DlforgeError(f"export format {fmt!r}: choose {', '.join(FILES)}")
    run = run_dir if isinstance(run_dir, Run) else Run.open(run_dir)
    predictor = Predictor.from_run(run)  # the torch graph, on the CPU
    task, meta, graph = predictor.capability(Exportable), predictor.meta, predictor.graph
    what = f"{meta['task']} model {meta['model']}"
    example = task.example_inputs(meta, EXAMPLE_BATCH)
    check = task.example_inputs(meta, CHECK_BATCH)
    with torch.no_grad():  # the torch graph's outputs: what the export must reproduce
        expected = _tensors(graph(*check.values()), what, task.export_hint)
        at_example = _tensors(graph(*example.values()), what, task.export_hint)
    names = list(task.graph_outputs) if len(task.graph_outputs) == len(expected) else \
        [f"output_{i}" for i in range(len(expected))]
    axes = {name: {0: "batch", **task.dynamic_axes.get(name, {})} for name in example}  # input -> {axis: name}
    path = Path(out) if out is not None else run.path / "export" / FILES[fmt]
    log.info("exporting %s as %s to %s", what, fmt, path)
    diff = 0.0

    def write_and_check(tmp: Path) -> None:
        nonlocal diff
        with _quiet():
            try:
                WRITERS[fmt](graph, example, axes, names, tmp)
            except Exception as e:  # the exporters' own errors name ops and guards, not the model
                raise DlforgeError(f"{what} cannot be exported as {fmt}: {type(e).__name__}: "
                                   f"{first_line(e)}") from e
            try:
                got = _tensors(RUNNERS[fmt](tmp, check), what, task.export_hint)
            except Exception as e:
                raise DlforgeError(f"{what}: the {fmt} export was written but does not run: {type(e).__name__}: "
                                   f"{first_line(e)}") from e
        diff = max(float((g.double() - e.double()).abs().max()) if g.numel() else 0.0
                   for g, e in zip(got, expected, strict=True))
        if diff > atol:
            raise DlforgeError(f"{what}: the {fmt} export differs from the torch model by up to {diff:.3g} "
                               f"(tolerance {atol:g}) at batch {CHECK_BATCH}; nothing was written")

    try:
        with _sigterm_unwinds():
            atomic_write(path, write_and_check)
    except OSError as e:
        raise DlforgeError(f"{path}: cannot write the export ({e.strerror or e}); give a writable --out") from None
    inputs = [_describe(name, t, axes[name]) for name, t in example.items()]
    outputs = [_describe(name, e, {0: "batch", **{a: "dynamic" for a in range(1, e.ndim) if e.shape[a] != t.shape[a]}})
               for name, e, t in zip(names, expected, at_example, strict=True)]
    seconds = time.perf_counter() - start
    result = ExportResult(path, fmt, diff, inputs, outputs, seconds)
    atomic_write_json(path.with_name(path.name + ".json"), {
        **asdict(result), "path": path.name, "task": meta["task"], "model": meta["model"], "atol": atol,
        "weights_sha256": run.weights_digest(),
        "check_batch": CHECK_BATCH, "opset": _opset(path) if fmt == "onnx" else None, "versions": _versions(fmt),
        "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    log.info("wrote %s (%.1f MB) in %.1f s; max |difference| from torch %.2g at batch %d", path,
             path.stat().st_size / 1e6, seconds, diff, CHECK_BATCH)
    return result


# ---------------------------------------------------------------- writers and runners, by format


def _write_onnx(graph: nn.Module, example: Tensors, axes: dict[str, dict[int, str]], outputs: list[str],
                path: Path) -> None:
    # The dynamo exporter (torch.export, then onnxscript), the supported one in torch 2.15; axis names given as
    # strings become dynamic dimensions named so in the ONNX file. One file: weights are not stored apart.
    program = torch.onnx.export(graph, tuple(example.values()), input_names=list(example), output_names=outputs,
                                dynamic_shapes=tuple(axes.values()), dynamo=True, verbose=False)
    program.save(path, external_data=False)


def _run_onnx(path: Path, inputs: Tensors) -> Any:
    return OnnxGraph(path)(**inputs)


def _write_torchscript(graph: nn.Module, example: Tensors, axes: dict[str, dict[int, str]], outputs: list[str],
                       path: Path) -> None:
    # Traced, not scripted: tracing records the ops run on the example, so the batch size must not steer control
    # flow; the check at another batch size catches a graph where it does.
    log.info("TorchScript is deprecated in torch 2.15; torch-export is its successor")
    with torch.no_grad():
        traced = torch.jit.trace(graph, tuple(example.values()), check_trace=False)
    torch.jit.save(traced, str(path))


def _run_torchscript(path: Path, inputs: Tensors) -> Any:
    with torch.no_grad():
        return torch.jit.load(str(path), map_location="cpu")(*inputs.values())


def _write_torch_export(graph: nn.Module, example: Tensors, axes: dict[str, dict[int, str]], outputs: list[str],
                        path: Path) -> None:
    # Dim.DYNAMIC: torch.export infers each axis' range (e.g. tokens <= max positions) and fails if it cannot vary.
    shapes = tuple({axis: torch.export.Dim.DYNAMIC for axis in named} for named in axes.values())
    program = torch.export.export(graph, tuple(example.values()), dynamic_shapes=shapes)
    buffer = io.BytesIO()  # torch.export.save wants a path ending in .pt2, or a buffer; the temporary name is not
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())


def _run_torch_export(path: Path, inputs: Tensors) -> Any:
    with open(path, "rb") as f, torch.no_grad():
        return torch.export.load(f).module()(*inputs.values())


WRITERS: dict[str, Callable[..., None]] = {"onnx": _write_onnx, "torchscript": _write_torchscript,
                                           "torch-export": _write_torch_export}
RUNNERS: dict[str, Callable[[Path, Tensors], Any]] = {"onnx": _run_onnx, "torchscript": _run_torchscript,
                                                      "torch-export": _run_torch_export}


# ---------------------------------------------------------------- the ONNX file the Predictor's backend runs


def ensure_onnx(run: Run) -> Path:
    """The run's ONNX export, exported first if the run has none, or one made from other weights."""
    reason = stale_reason(run)
    if reason is not None:
        log.info("%s has %s: exporting it now (as `dlforge export RUN --format onnx` does)", run.path, reason)
        export_run(run, "onnx")
    return run.path / ONNX_FILE


# ---------------------------------------------------------------- helpers


def _tensors(out: Any, what: str, hint: str) -> tuple[torch.Tensor, ...]:
    """A graph's output as a tuple of tensors; anything else (lists of per-image dicts) does not export."""
    out = out if isinstance(out, tuple) else (out,)
    if not all(torch.is_tensor(t) for t in out):
        kind = type(out[0]).__name__ if len(out) == 1 else "a tuple holding non-tensors"
        raise DlforgeError(f"{what} cannot be exported: its inference graph returns a {kind}, not tensors"
                           + (f"; {hint}" if hint else ""))
    return out


def _describe(name: str, t: torch.Tensor, axes: dict[int, str]) -> dict[str, Any]:
    return {"name": name, "shape": [axes.get(i, n) for i, n in enumerate(t.shape)],
            "dtype": str(t.dtype).removeprefix("torch.")}


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _versions(fmt: str) -> dict[str, str]:
    versions = {"torch": torch.__version__}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        versions |= {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    return versions


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (`kill`, `timeout`, a stopped container) ends Python at once by default, running no `finally`: the
    temporary file of a half-written export would stay. Meanwhile it raises SystemExit(143) instead, so
    atomic_write removes it. Only where SIGTERM has its default action, and in the main thread (the only one a
    handler can be set in): a server's own handling stays as it is."""
    ours = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    if ours:
        signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters warn about their internals (deprecations, renamed axes, guards) and log every pass they run:
    what matters is checked here, so their warnings go to the debug log and their logs below WARNING nowhere."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            log.debug("export: %s", w.message)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
