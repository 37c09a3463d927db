"""The run directory's format: typed, versioned meta.json; runs written by an older dlforge keep loading, predicting
and serving (tests/fixtures/digits-format0 was written by the dlforge of commit 1e29609); renamed spec fields and
model names still load, with a FutureWarning; atomic writes give files the umask's mode."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits
from typer.testing import CliRunner

import dlforge
from dlforge import spec as spec_module
from dlforge._io import atomic_write_text
from dlforge.errors import RunError, SpecError
from dlforge.registry import TASKS
from dlforge.run import Run
from dlforge.run_meta import FORMAT_VERSION, MIGRATIONS, RunMeta
from dlforge.spec import RENAMED_FIELDS, load_spec, validate_spec
from tests.conftest import digits_spec, write_spec

OLD_RUN = Path(__file__).parent / "fixtures" / "digits-format0"
RENAMED = "train.accumulate was renamed train.accumulate_grad_batches"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """A copy of the committed format-0 run (serving may write beside it)."""
    return Path(shutil.copytree(OLD_RUN, tmp_path / OLD_RUN.name))


def recorded() -> tuple[list[np.ndarray], list[dict]]:
    """The fixed digits and what the dlforge that wrote the fixture predicted for them."""
    record = json.loads((OLD_RUN / "predictions.json").read_text())
    digits = load_digits().images
    return [np.round(digits[i] * 255 / 16).astype(np.uint8) for i in record["digits"]], record["predictions"]


def test_the_fixture_is_an_old_small_run() -> None:
    meta = json.loads((OLD_RUN / "meta.json").read_text())
    assert "format_version" not in meta and meta["versions"]["dlforge"] == "0.1.0"
    assert "accumulate" in yaml.safe_load((OLD_RUN / "spec.yaml").read_text())["train"]  # the field's old name
    assert sum(p.stat().st_size for p in OLD_RUN.rglob("*") if p.is_file()) < 400_000


def test_an_old_run_loads_and_predicts_as_it_did(old_run: Path) -> None:
    with pytest.warns(FutureWarning, match=RENAMED):
        predictor = dlforge.load(old_run)
    assert predictor.spec.train.accumulate_grad_batches == 1
    images, expected = recorded()
    predictions = predictor.predict(images)
    assert [p["label"] for p in predictions] == [p["label"] for p in expected]
    for got, want in zip(predictions, expected, strict=True):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=2e-6)


def test_an_old_run_serves(old_run: Path) -> None:
    from tests.serve.conftest import ThreadServer, png_bytes

    images, expected = recorded()
    with pytest.warns(FutureWarning, match=RENAMED), ThreadServer(old_run) as server, server.client() as c:
        body = {"instances": [base64.b64encode(png_bytes(im)).decode() for im in images]}
        answer = c.post("/predict", json=body)
        assert c.get("/metadata").json()["classes"] == [str(i) for i in range(10)]
    assert answer.status_code == 200
    served = answer.json()["predictions"]
    assert [p["label"] for p in served] == [p["label"] for p in expected]
    for got, want in zip(served, expected, strict=True):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=2e-6)


def test_old_meta_is_migrated_in_memory_only(old_run: Path) -> None:
    before = (old_run / "meta.json").read_bytes()
    meta = Run.open(old_run).read_meta()
    assert meta["format_version"] == FORMAT_VERSION and list(MIGRATIONS) == list(range(FORMAT_VERSION))
    assert meta["epochs"] == 1  # format 0 kept it in COMPLETE only
    assert meta["classes"] == [str(i) for i in range(10)] and meta["temperature"] == pytest.approx(0.14878)
    assert "pretrained" not in meta and "fairness" not in meta  # absent keys stay absent (no nulls)
    assert (old_run / "meta.json").read_bytes() == before


@pytest.mark.filterwarnings("ignore::FutureWarning")  # its spec's old field name
def test_a_run_from_a_newer_dlforge_is_refused(old_run: Path) -> None:
    meta = json.loads((old_run / "meta.json").read_text())
    (old_run / "meta.json").write_text(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(RunError, match=rf"run format {FORMAT_VERSION + 1} \(dlforge 0.1.0\) is newer than this "
                                       r"dlforge reads .* upgrade dlforge"):
        dlforge.load(old_run)


def test_meta_is_validated_on_write_and_read(old_run: Path) -> None:
    run = Run.open(old_run)
    meta = run.read_meta()
    with pytest.raises(RunError, match=r"meta.json: sizes.train: Input should be a valid integer"):
        run.write_meta({**meta, "sizes": {"train": "many"}})
    with pytest.raises(RunError, match=r"meta.json: quantiles: unknown field \(a task declares its own"):
        run.write_meta({**meta, "quantiles": [0.5]})  # a forecaster's key, not an image classifier's
    run.write_meta(meta)
    written = json.loads((old_run / "meta.json").read_text())
    assert written["format_version"] == FORMAT_VERSION and written == run.read_meta()
    (old_run / "meta.json").write_text(json.dumps({**meta, "task": "tea_making"}))
    with pytest.raises(RunError, match="task 'tea_making' is not a task this dlforge knows"):
        run.read_meta()


def test_tasks_declare_their_meta() -> None:
    classes = {name: TASKS.get(name).meta_class for name in TASKS.names()}
    assert all(issubclass(c, RunMeta) for c in classes.values())
    forecast = {"task": "forecasting", "model": "lstm", "cell": "lstm", "quantiles": [0.1, 0.5, 0.9],
                "encoding": {"horizon": 3}, "series": 1, "interval_factors": [1.2, 1.0, 1.1]}
    assert classes["forecasting"].of(forecast).to_dict() == {"format_version": FORMAT_VERSION, **forecast}
    with pytest.raises(RunError, match="cell: unknown field"):
        RunMeta.of(forecast)
    text = {"task": "text_generation", "model": "hf:x", "lora": None, "model_config": {"n_layer": 2},
            "before_fine_tuning": {"perplexity": 9.0, "loss": 2.2}}
    assert classes["text_generation"].of(text).to_dict()["model_config"] == {"n_layer": 2}
    assert classes["text_generation"].of(text).to_dict()["lora"] is None  # given as null: kept


# ---------------------------------------------------------------- deprecations


def test_a_renamed_field_warns_and_loads(tmp_path: Path) -> None:
    assert RENAMED_FIELDS["train.accumulate"] == "train.accumulate_grad_batches"
    with pytest.warns(FutureWarning, match=RENAMED):
        spec = validate_spec(digits_spec(accumulate=3))
    assert spec.train.accumulate_grad_batches == 3
    assert "accumulate:" not in dlforge.spec.spec_to_yaml(spec)  # written back under the new name
    with pytest.warns(FutureWarning, match=RENAMED):  # a --set of the new name wins over the file's old one
        spec = load_spec(write_spec(tmp_path / "a.yaml", digits_spec(accumulate=3)),
                         ["train.accumulate_grad_batches=2"])
    assert spec.train.accumulate_grad_batches == 2
    path = write_spec(tmp_path / "b.yaml", digits_spec(accumulate=0))
    line = path.read_text().splitlines().index("  accumulate: 0") + 1
    with pytest.warns(FutureWarning), pytest.raises(SpecError, match=rf"b.yaml:{line}: train.accumulate_grad_"):
        load_spec(path)  # the error points at the line the old name is on


def test_dlforge_validate_warns_and_passes(tmp_path: Path) -> None:
    from dlforge.cli import app

    path = write_spec(tmp_path / "spec.yaml", digits_spec(accumulate=2))
    with pytest.warns(FutureWarning, match=RENAMED):
        result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "accumulate_grad_batches: 2" in result.output


def test_a_renamed_model_warns_and_loads(old_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(spec_module.RENAMED_MODELS, ("image_classification", "resnet_tiny"), "resnet_small")
    spec = digits_spec()
    spec["model"]["name"] = "resnet_tiny"
    with pytest.warns(FutureWarning, match="model 'resnet_tiny' was renamed 'resnet_small'"):
        assert validate_spec(spec).model.name == "resnet_small"
    meta = json.loads((old_run / "meta.json").read_text())
    (old_run / "meta.json").write_text(json.dumps({**meta, "model": "resnet_tiny"}))
    with pytest.warns(FutureWarning, match="meta.json: model 'resnet_tiny' was renamed"):
        assert Run.open(old_run).read_meta()["model"] == "resnet_small"


# ---------------------------------------------------------------- defects: report status, card, file modes


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A tiny digits run of this module's own (the session's shared one gets other tests' files)."""
    spec = digits_spec(epochs=2, batch_size=128)
    spec["model"]["kwargs"] = {"width": 8}
    return dlforge.train(validate_spec(spec), tmp_path_factory.mktemp("runs"), progress=False)


def test_a_finished_runs_report_and_card(finished: Run) -> None:
    report = (finished.path / "report.html").read_text()
    assert "· complete</p>" in report and "<td>status</td><td>complete</td>" in report
    assert "<td>test accuracy</td>" in report  # the headline, from the summary COMPLETE gets
    meta = finished.read_meta()
    assert meta["format_version"] == FORMAT_VERSION and meta["epochs"] == 2
    card = (finished.path / "card.md").read_text()
    assert f"| Trained | 2 epochs (best {meta['best_epoch']}), on cpu x 1 |" in card
    newest = max(finished.path.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert newest.name == "COMPLETE"  # still the last file written


def test_run_files_get_the_umasks_mode(finished: Run, tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    files = {str(p.relative_to(finished.path)): p for p in finished.path.rglob("*") if p.is_file()}
    assert {"meta.json", "model.safetensors", "COMPLETE", "report.html", "card.md", "checkpoints/last.pt"} <= set(files)
    modes = {name: oct(stat.S_IMODE(p.stat().st_mode)) for name, p in files.items()}
    assert modes == dict.fromkeys(files, oct(0o666 & ~umask))
    old = os.umask(0o027)
    try:
        for _ in range(2):  # a new file, then one replaced
            path = atomic_write_text(tmp_path / "x.json", "{}")
            assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left


def as_another_user(call: Callable[[], object]) -> str:
    """`call()` under another uid (nobody, in a forked child: the kernel's own permission checks, as for a container
    running as non-root on a shared volume); as a non-root user, in this process. What it returned, or raised."""
    if os.geteuid() != 0:
        try:
            return repr(call())
        except Exception as e:
            return f"{type(e).__name__}: {e}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, call, report, exit without running pytest's cleanup
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            answer = repr(call())
        except BaseException as e:
            answer = f"{type(e).__name__}: {e}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        answer = f.read().decode()
    os.waitpid(pid, 0)
    return answer


def test_another_user_reads_a_run_or_gets_one_line(finished: Run) -> None:
    shared = Path(tempfile.mkdtemp())  # a folder every uid may enter, as a shared volume's
    try:
        shared.chmod(0o755)
        copy = Path(shutil.copytree(finished.path, shared / finished.path.name))  # modes kept (copy2)
        umask = os.umask(0o022)
        os.umask(umask)
        if not umask & 0o004:  # the run's files have the umask's mode: with 022, 0644, and another uid loads it
            assert as_another_user(lambda: Run.open(copy).read_meta()["task"]) == "'image_classification'"
        # mkstemp's 0600, as before issue 17, by another user (as root: the child is that other user; as a user,
        # 0000, since an owner reads 0600)
        (copy / "meta.json").chmod(0o600 if os.geteuid() == 0 else 0o000)
        assert as_another_user(lambda: dlforge.load(copy)) == \
            f"RunError: {copy}/meta.json: cannot read it: Permission denied"
    finally:
        shutil.rmtree(shared)
