"""The run directory: the unit of hand-off between training and everything downstream.

    runs/<name>-<YYYYmmdd-HHMMSS>/
        spec.yaml            resolved spec
        meta.json            task, model, labels, preprocessing, library versions (`RunMeta`, with a format version)
        metrics.jsonl        one row per epoch (losses, metrics, lr, per-layer gradient norms)
        checkpoints/last.pt  everything needed to resume exactly (written atomically each epoch)
        model.safetensors    the final (best) weights
        eval.json, plots/    test evaluation and its figures
        report.html
        RUNNING / FAILED     while training (its pid and host) / why it stopped
        COMPLETE             written last: only a run with it is loaded as finished

Wherever the CLI asks for a run, `resolve_run` also takes `latest` (the newest finished run) or a unique prefix of a
run's name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import yaml

from dlforge._io import atomic_write_json, atomic_write_text, naming
from dlforge.errors import DlforgeError, RunError, listed
from dlforge.registry import TASKS
from dlforge.run_meta import FORMAT_VERSION, RunMeta, migrate
from dlforge.spec import SpecBase, renamed_model, spec_to_yaml, validate_spec


class Run:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, runs_dir: str | os.PathLike, name: str) -> Run:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(runs_dir) / f"{name}-{stamp}"
        for i in range(1000):
            path = base if i == 0 else base.with_name(f"{base.name}-{i}")
            try:
                path.mkdir(parents=True)
                return cls(path)
            except FileExistsError:
                continue
        raise RunError(f"{base}: cannot create a new run directory")

    @classmethod
    def open(cls, path: str | os.PathLike, complete: bool = True) -> Run:
        """An existing run; with `complete`, one that finished (has its COMPLETE marker)."""
        run = cls(path)
        if not run.meta_path.exists() or not run.spec_path.exists():
            raise RunError(f"{path}: not a dlforge run directory (no spec.yaml / meta.json)")
        if complete and not run.is_complete:
            raise RunError(f"{path}: the run did not finish (status: {run.status()}); "
                           f"resume it with: dlforge train --resume {path}")
        for file in [run.spec_path, run.meta_path] + ([run.weights_path] if complete else []):
            _readable(file)  # a run written by another user, with modes that keep us out: say so here
        return run

    # ---------------------------------------------------------------- files
    @property
    def spec_path(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    @property
    def weights_path(self) -> Path:
        return self.path / "model.safetensors"

    def weights_digest(self) -> str:
        """SHA-256 of model.safetensors (hex): the model's version, and what an export was made from."""
        import hashlib

        digest = hashlib.sha256()
        with open(self.weights_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_spec(self, spec: SpecBase) -> None:
        atomic_write_text(self.spec_path, spec_to_yaml(spec))

    def read_spec(self) -> SpecBase:
        """The run's spec, validated as today's (renamed fields and models read under their new names)."""
        return validate_spec(yaml.safe_load(_read(self.spec_path)), source=str(self.spec_path))

    def write_meta(self, meta: dict[str, Any] | RunMeta) -> None:
        """meta.json, validated by its task's `meta_class` and stamped with the current format version."""
        raw = {**(meta.to_dict() if isinstance(meta, RunMeta) else meta), "format_version": FORMAT_VERSION}
        atomic_write_json(self.meta_path, _meta_class(raw, self.meta_path).of(raw, str(self.meta_path)).to_dict())

    def read_meta(self) -> dict[str, Any]:
        """meta.json as a plain dict: migrated to the current format (in memory), then validated."""
        try:
            raw = json.loads(_read(self.meta_path))
        except json.JSONDecodeError as e:
            raise RunError(f"{self.meta_path}: not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise RunError(f"{self.meta_path}: not a run's meta (a JSON object)")
        meta = migrate(raw, self.path, str(self.meta_path))
        if isinstance(meta.get("model"), str):
            meta["model"] = renamed_model(str(meta.get("task")), meta["model"], str(self.meta_path))
        return _meta_class(meta, self.meta_path).of(meta, str(self.meta_path)).to_dict()

    def append_metrics(self, row: dict[str, Any]) -> None:
        with naming(self.metrics_path), open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in _read(self.metrics_path).splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill: everything after it is not trusted
                break
        return rows

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the rows of the first `epochs` epochs (those the checkpoint being resumed covers)."""
        rows = [r for r in self.read_metrics() if r["epoch"] <= epochs]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def write_eval(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.path / "eval.json", result)

    def read_eval(self) -> dict[str, Any] | None:
        path = self.path / "eval.json"
        return json.loads(_read(path)) if path.exists() else None

    # ---------------------------------------------------------------- status
    @property
    def is_complete(self) -> bool:
        return (self.path / "COMPLETE").exists()

    def completion(self) -> dict[str, Any] | None:
        path = self.path / "COMPLETE"
        return json.loads(_read(path)) if path.exists() else None

    def mark_running(self) -> None:
        (self.path / "FAILED").unlink(missing_ok=True)
        atomic_write_json(self.path / "RUNNING", {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()})

    def mark_failed(self, reason: str) -> None:
        atomic_write_json(self.path / "FAILED", {"reason": reason, "at": _now()})
        (self.path / "RUNNING").unlink(missing_ok=True)

    def mark_complete(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / "COMPLETE", {"finished": _now(), **summary})
        (self.path / "RUNNING").unlink(missing_ok=True)

    def describe(self) -> tuple[str, str]:
        """(task, model name), for listings: from meta.json, else from spec.yaml (a run stopped before its meta was
        written: older versions made the directory before reading the data); "?" where neither says."""
        try:
            if self.meta_path.exists():
                meta = self.read_meta()
                return meta["task"], meta["model"]
            spec = yaml.safe_load(_read(self.spec_path))
            model = spec.get("model") or {}
            return str(spec.get("task", "?")), str(model.get("name", "?") if isinstance(model, dict) else model)
        except (DlforgeError, yaml.YAMLError, AttributeError):
            return "?", "?"

    def status(self) -> str:
        """complete, failed, running (its process is alive) or stopped (killed: resumable)."""
        if self.is_complete:
            return "complete"
        if (self.path / "FAILED").exists():
            return "failed"
        return "running" if self.training_process() else "stopped"

    def training_process(self) -> dict[str, Any] | None:
        """RUNNING's record ({"pid", "host", "started"}) while its process lives on this host; None otherwise (no
        marker, a killed process, or this process itself: a restarted container is often PID 1 again). A marker
        from another host (or a damaged one) cannot be checked from here: None too."""
        try:
            marker = json.loads((self.path / "RUNNING").read_text())
            pid = int(marker["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if marker.get("host", socket.gethostname()) != socket.gethostname() or pid == os.getpid():
            return None
        try:
            os.kill(pid, 0)
        except PermissionError:  # alive, another user's
            return marker
        except (OSError, OverflowError):
            return None
        return marker


def list_runs(runs_dir: str | os.PathLike) -> list[Run]:
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted((Run(p) for p in root.iterdir() if (p / "spec.yaml").exists()), key=lambda r: r.path.name)


LATEST = "latest"


def resolve_run(given: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Path:
    """The run directory `given` names: a run directory; `latest` (or `<folder>/latest`): the newest finished run in
    `runs_dir` (or that folder); a spec's name (`digits-cnn`, `runs/digits-cnn`): the newest finished run of that
    spec there; or the start of a run's name, matching one run there (`digits-cnn-2026`, `runs/dig`). A RunError
    otherwise, listing the runs an ambiguous prefix matches.

    `latest` is found, not stored: the finished run whose COMPLETE marker says it finished last. A pointer file would
    be one more thing to keep in step (and a stray entry beside the runs); a symlink needs privileges on Windows."""
    path = Path(given)
    if path.is_dir():
        return path
    folder = path.parent
    if len(path.parts) == 1:  # a name alone: in runs_dir, or here (typed from inside a folder of runs)
        folder = Path(runs_dir) if list_runs(runs_dir) or not list_runs(".") else Path(".")
    runs = list_runs(folder)
    # `latest`: the newest finished run of the folder; a spec's name (`digits-cnn`): the newest finished of its runs
    # (`<name>-<stamp>`), so that the README's commands keep naming one run after the spec is trained again.
    of_spec = re.compile(re.escape(path.name) + r"-\d{8}-\d{6}(-\d+)?")
    if path.name == LATEST or any(of_spec.fullmatch(r.path.name) for r in runs):
        finished = [r for r in runs if r.is_complete and (path.name == LATEST or of_spec.fullmatch(r.path.name))]
        if not finished:
            raise RunError(f"{given}: no finished run {'' if path.name == LATEST else 'of that name '}in {folder}/ yet")
        return max(finished, key=_finished_at).path
    matches = [r.path for r in runs if r.path.name.startswith(path.name)]
    exact = [m for m in matches if m.name == path.name]  # digits-20261124-120000 beside digits-20261124-120000-1
    if len(exact or matches) == 1:
        return (exact or matches)[0]
    if not matches:
        raise RunError(f"{given}: no such run directory, nor a run in {folder}/ whose name starts with {path.name!r} "
                       f"(`dlforge runs {folder}` lists them)")
    raise RunError(f"{given}: {len(matches)} runs in {folder}/ start with {path.name!r}: "
                   f"{listed([m.name for m in matches])}; give more of the name, or `latest` for the newest finished "
                   "run")


def _finished_at(run: Run) -> tuple[str, int]:
    """When a run finished: COMPLETE's UTC time (to the second; kept when runs are copied), then the file's own
    modification time to break ties."""
    try:
        finished = str((run.completion() or {}).get("finished", ""))
    except (DlforgeError, ValueError):  # a damaged marker: ordered by its file's time alone
        finished = ""
    return finished, (run.path / "COMPLETE").stat().st_mtime_ns


def _meta_class(meta: dict[str, Any], source: Path) -> type[RunMeta]:
    task = meta.get("task")
    if task not in TASKS.names():
        raise RunError(f"{source}: task {task!r} is not a task this dlforge knows ({', '.join(TASKS.names())})")
    return TASKS.get(task).meta_class


def _read(path: Path) -> str:
    """The text of one of the run's files; a RunError naming it where it cannot be read."""
    try:
        return path.read_text()
    except OSError as e:
        raise RunError(f"{path}: cannot read it: {e.strerror or e}") from None


def _readable(path: Path) -> None:
    try:
        path.open("rb").close()
    except OSError as e:
        raise RunError(f"{path}: cannot read it: {e.strerror or e}") from None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
