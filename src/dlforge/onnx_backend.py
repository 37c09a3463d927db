"""The Predictor's ONNX backend: a run's exported graph run by onnxruntime on the CPU, called as the torch graph is.

It only loads: `dlforge.export` writes and checks the file (and `dlforge.load(run, backend="onnx")` or the server
export first when the run has no export, or one made from other weights).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from dlforge.errors import DlforgeError, RunError, first_line
from dlforge.run import Run

ONNX_FILE = Path("export") / "model.onnx"


class OnnxGraph:
    """An ONNX graph run by onnxruntime on the CPU, called as the torch graph is: the same positional or keyword
    tensors in, torch tensors out (a tuple when the graph has several outputs). The session is made once."""

    backend = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()  # as many as torch would use
        options.inter_op_num_threads = 1  # the graphs here are chains: no parallel branches worth a pool
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises NoSuchFile, InvalidProtobuf, Fail, ... of its own
            raise DlforgeError(f"{self.path}: cannot load the ONNX model ({first_line(e)}); export it again with: "
                               "dlforge export RUN --format onnx") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(args) > len(self.inputs):
            raise TypeError(f"{self.path.name} takes {len(self.inputs)} inputs ({', '.join(self.inputs)}), "
                            f"got {len(args)}")
        feed = dict(zip(self.inputs, args, strict=False)) | kwargs
        if sorted(feed) != sorted(self.inputs):
            raise TypeError(f"{self.path.name} takes inputs {', '.join(self.inputs)}, got {', '.join(feed)}")
        device = next(iter(feed.values())).device
        results = self.session.run(None, {k: np.ascontiguousarray(v.numpy(force=True)) for k, v in feed.items()})
        out = tuple(torch.from_numpy(r).to(device) for r in results)
        return out[0] if len(out) == 1 else out


def stale_reason(run: Run) -> str | None:
    """Why the run's ONNX export cannot serve its weights (missing, or made from other weights), or None."""
    path = run.path / ONNX_FILE
    if not path.exists():
        return "no ONNX export yet"
    sidecar = path.with_name(path.name + ".json")
    made_from = json.loads(sidecar.read_text()).get("weights_sha256") if sidecar.exists() else None
    if made_from is not None and made_from != run.weights_digest():
        return "exported from other weights than the run's model.safetensors"
    return None


def onnx_graph(run: Run) -> OnnxGraph:
    """The run's ONNX export as a graph; a RunError names `dlforge export` when it is missing or stale."""
    reason = stale_reason(run)
    if reason is not None:
        raise RunError(f"{run.path}: {reason}; export it with: dlforge export {run.path} --format onnx")
    return OnnxGraph(run.path / ONNX_FILE)
