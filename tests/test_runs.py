"""Finding runs: `latest`, a spec's name and a prefix of a run's name wherever a run is asked for; what
`dlforge runs` shows of runs that failed; a quick run on part of the data (`data.limit`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import dlforge
from dlforge._io import atomic_write_json
from dlforge.errors import DlforgeError, RunError
from dlforge.run import Run, resolve_run
from tests.conftest import cli, digits_spec


def make_run(runs: Path, name: str, finished: str | None = None, failed: bool = False) -> Path:
    """A run directory as training leaves it, without training: its spec; COMPLETE (finished at `finished`, a UTC
    time) or FAILED, or neither (stopped)."""
    run = Run.create(runs, name)
    run.write_spec(dlforge.validate_spec({**digits_spec(), "name": name}))
    if finished is not None:
        atomic_write_json(run.path / "COMPLETE", {"finished": finished})
    if failed:
        run.mark_failed("RuntimeError: the machine went away")
    return run.path


def test_latest_and_prefixes_name_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    old = make_run(runs, "digits-cnn", finished="2026-01-03T10:00:00+00:00")
    new = make_run(runs, "digits-cnn", finished="2026-01-03T11:00:00+00:00")
    make_run(runs, "digits-cnn", failed=True)  # started last, never finished: not the latest
    adult = make_run(runs, "adult-mlp", finished="2026-01-02T09:00:00+00:00")
    assert resolve_run("latest", runs) == resolve_run(runs / "latest") == new
    assert resolve_run("adult", runs) == resolve_run(runs / "adult-m") == adult
    assert resolve_run(old) == old and resolve_run(old.name, runs) == old  # a whole name, even if others extend it
    assert resolve_run("digits-cnn", runs) == resolve_run(runs / "digits-cnn") == new  # a spec's newest finished run
    with pytest.raises(RunError, match=r"^mnist-cnn: no finished run of that name in "):
        make_run(runs / "mnist", "mnist-cnn", failed=True)
        resolve_run("mnist-cnn", runs / "mnist")
    with pytest.raises(RunError) as e:
        resolve_run("digits", runs)
    assert str(e.value).startswith(f"digits: 3 runs in {runs}/ start with 'digits': '{old.name}', '{new.name}', ")
    assert str(e.value).endswith("give more of the name, or `latest` for the newest finished run")
    with pytest.raises(RunError, match=rf"^mnist: no such run directory, nor a run in {runs}/ whose name starts "):
        resolve_run("mnist", runs)
    with pytest.raises(RunError, match=r"^.*other/latest: no finished run in .*other/ yet$"):
        resolve_run(tmp_path / "other" / "latest")
    monkeypatch.chdir(runs)  # typed from inside the runs folder: a bare name is looked for here
    assert resolve_run("adult") == Path(adult.name) and resolve_run("latest") == Path(new.name)


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding runs/ with one finished quick run: 120 of the 1797 digits, one epoch."""
    root = tmp_path_factory.mktemp("quick")
    spec = digits_spec(epochs=1)
    spec.update(name="quick", model={"name": "resnet_small", "kwargs": {"width": 8}})
    spec["data"]["limit"] = 120
    dlforge.train(dlforge.validate_spec(spec), runs_dir=root / "runs", progress=False)
    return root


def test_a_quick_run_trains_on_the_stated_number_of_items(quick_runs: Path) -> None:
    (run,) = dlforge.run.list_runs(quick_runs / "runs")
    meta = run.read_meta()
    assert meta["sizes"] == {"train": 84, "val": 12, "test": 24}  # 120 = 70% + 10% + 20%, of 1797
    assert meta["data"]["subset"] == {"limit": 120}
    assert run.read_eval()["n"] == 24 and run.read_spec().data.limit == 120


def test_the_cli_takes_latest_and_prefixes_and_lists_task_and_model_of_failed_runs(quick_runs: Path) -> None:
    (finished,) = dlforge.run.list_runs(quick_runs / "runs")
    failed = make_run(quick_runs / "runs", "quick", failed=True)  # as older versions left a bad-data run: no meta
    image = quick_runs / "seven.png"
    digits = load_digits()
    Image.fromarray(np.round(digits.images[7] * 255 / 16).astype(np.uint8)).save(image)

    (prediction,) = json.loads(cli("predict", "latest", image, cwd=quick_runs, check=True).stdout)
    assert prediction["label"] in [str(d) for d in range(10)]
    assert json.loads(cli("predict", "quick", image, cwd=quick_runs, check=True).stdout) == [prediction]  # by spec
    proc = cli("predict", "qu", image, cwd=quick_runs)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert f"qu: 2 runs in runs/ start with 'qu': '{finished.path.name}', '{failed.name}'" in errors[0]

    rows = [line.split("\t") for line in cli("runs", cwd=quick_runs, check=True).stdout.splitlines()]
    assert rows[0] == ["run", "status", "task", "model", "epochs", "metric"]
    assert [failed.name, "failed", "image_classification", "resnet_small", "0", ""] in rows


def test_a_run_that_fails_after_its_data_was_read_records_task_and_model(tmp_path: Path) -> None:
    spec = digits_spec(epochs=1, monitor={"metric": "val/nosuch"})  # found out after the first epoch
    spec["data"]["limit"] = 60
    with pytest.raises(DlforgeError, match=r"train\.monitor\.metric: 'val/nosuch' is not logged"):
        dlforge.train(dlforge.validate_spec(spec), runs_dir=tmp_path, progress=False)
    (run,) = dlforge.run.list_runs(tmp_path)
    assert run.status() == "failed" and run.describe() == ("image_classification", "resnet_small")
    assert run.read_meta()["sizes"] == {"train": 42, "val": 6, "test": 12}
