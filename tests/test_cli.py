"""The command line end to end, as a user types it: train, runs, predict, evaluate, report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dlforge.data.examples import table_rows
from tests.conftest import cli, digits_spec, write_csv, write_digit_folder, write_spec


def test_train_predict_evaluate_report(tmp_path: Path) -> None:
    folder = write_digit_folder(tmp_path / "images", [3, 5, 8], per_class=40, size=12)
    spec = digits_spec(epochs=4)
    spec["data"] = {"source": "images", "split": {"val": 0.2, "test": 0.2, "seed": 0}}
    path = write_spec(tmp_path / "spec.yaml", spec)

    proc = cli("train", path, "--runs-dir", tmp_path / "runs", "--set", "train.epochs=3", check=True)
    assert "test accuracy" in proc.stdout and "report:" in proc.stdout
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("digits-test-")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # the --set took effect

    listing = cli("runs", tmp_path / "runs", check=True).stdout
    assert run.name[:20] in listing and "complete" in listing and "accuracy" in listing

    files = sorted((folder / "5").glob("*.png"))[:2]
    predictions = json.loads(cli("predict", run, *files, check=True).stdout)
    assert [p["input"] for p in predictions] == [str(f) for f in files]
    assert all(p["label"] in {"3", "5", "8"} for p in predictions)

    # Evaluate on a labelled CSV of new data: results go beside the run's own evaluation.
    rows = [(str(p), p.parent.name) for p in sorted(folder.rglob("*.png"))]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "new.csv", index=False)
    proc = cli("evaluate", run, "--data", tmp_path / "new.csv", check=True)
    out = run / "evaluations" / "new"
    result = json.loads((out / "eval.json").read_text())
    assert result["n"] == 120 and result["data"].endswith("new.csv")
    assert 0.0 <= result["metrics"]["ece"] <= 1.0
    assert len(result["confusion_matrix"]) == 3 and sum(map(sum, result["confusion_matrix"])) == 120
    assert (out / "plots" / "confusion_matrix.png").stat().st_size > 1000
    assert json.loads((run / "eval.json").read_text())["data"] == "test split"  # not overwritten

    (run / "report.html").unlink()
    assert "report.html" in cli("report", run, check=True).stdout
    assert (run / "report.html").stat().st_size > 10_000


def bad_data_spec(case: str, folder: Path) -> tuple[dict, str]:
    """A spec whose data is bad in one way, and what the one error line must say (naming the file)."""
    if case == "wrong path":
        spec = digits_spec()
        spec["data"] = {"source": str(folder / "no-such-images")}
        return spec, f"{folder / 'no-such-images'}: no such file or folder (data.source)"
    if case == "missing column":
        table = write_csv(folder / "table.csv", table_rows(30))
        spec = {"name": "table-test", "task": "tabular_classification",
                "data": {"source": str(table), "label": "income"}, "model": {"name": "mlp"}}
        return spec, f"{table}: no column 'income' (data.label)"
    images = write_digit_folder(folder / "images", [1, 2], per_class=5)
    (images / "2" / "bad.png").write_bytes(b"garbage")
    spec = digits_spec()
    spec["data"] = {"source": str(images)}
    return spec, f"{images / '2' / 'bad.png'}: cannot read image"


@pytest.mark.parametrize("case", ["wrong path", "missing column", "corrupt image"])
def test_bad_data_exits_2_with_one_line_naming_the_file_and_leaves_no_run(tmp_path: Path, case: str) -> None:
    """The data is read and checked before a run directory is made; `validate --data` finds the same problem."""
    spec, expected = bad_data_spec(case, tmp_path)
    path = write_spec(tmp_path / "spec.yaml", spec)
    for args in (["train", path, "--runs-dir", tmp_path / "runs"], ["validate", path, "--data"]):
        proc = cli(*args)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr
        assert expected in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing to clean up, nothing listed as `failed ? ?`


def test_validate_data_reports_the_splits_of_a_quick_run(tmp_path: Path) -> None:
    folder = write_digit_folder(tmp_path / "images", [3, 5, 8], per_class=20, size=12)
    spec = digits_spec()
    spec["data"] = {"source": "images", "split": {"val": 0.2, "test": 0.2, "seed": 0}}
    proc = cli("validate", write_spec(tmp_path / "spec.yaml", spec), "--data", "--set", "data.limit=30", check=True)
    assert yaml.safe_load(proc.stdout)["data"]["limit"] == 30  # stdout: the resolved spec, still YAML
    assert "data OK: train 18, val 6, test 6; 3 classes: '3', '5', '8'" in proc.stderr
    assert not (tmp_path / "runs").exists() and folder.exists()


def test_prediction_options_are_the_tasks_own(tmp_path: Path) -> None:
    """`-o NAME=VALUE` takes the run's task's prediction options (the value read as YAML, validated by the task's
    predict spec); a wrong name or value exits 2 naming the option; the old flags still work, deprecated."""
    import numpy as np
    from PIL import Image

    import dlforge
    from tests.tasks.test_detection import detection_spec

    spec = detection_spec(data={"builtin": {"count": 12, "size": 64, "max_objects": 2}}, train={"epochs": 1})
    run = dlforge.train(dlforge.validate_spec(spec), runs_dir=tmp_path / "runs", progress=False).path
    images = []
    for i in range(2):
        images.append(tmp_path / f"in{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images[-1])

    # every candidate scores >= 0, and one is kept per image; --conf is the old spelling of -o conf
    proc = cli("predict", run, *images, "--conf", "0", "-o", "max_det=1", check=True)
    assert [len(p["objects"]) for p in json.loads(proc.stdout)] == [1, 1]
    assert "--conf is deprecated: use -o conf=0" in proc.stderr

    for bad, named in ((["-o", "conff=0.5"], "-o conff: object_detection predictions take no option conff (did "
                                              "you mean 'conf'?)"),
                       (["-o", "conf=2"], "prediction option conf=2: input should be less than or equal to 1")):
        proc = cli("predict", run, images[0], *bad)
        assert proc.returncode == 2, proc.stderr
        assert named in " ".join(proc.stderr.split()).lower() and "Traceback" not in proc.stderr


def test_prediction_option_values_are_yaml_and_the_help_lists_each_tasks_options(capsys: pytest.CaptureFixture
                                                                                 ) -> None:
    from typer.main import get_command

    from dlforge.cli import _parse_options, app
    from dlforge.errors import DlforgeError

    assert _parse_options(["conf=0.5", "max_det=3", "seed=null", "stop=[a, b]", "x=a=b"]) == {
        "conf": 0.5, "max_det": 3, "seed": None, "stop": ["a", "b"], "x": "a=b"}
    with pytest.raises(DlforgeError, match=r"^-o max_det=\[1: the value is not valid YAML$"):
        _parse_options(["max_det=[1"])
    with pytest.raises(DlforgeError, match=r"^-o conf: expected NAME=VALUE"):
        _parse_options(["conf"])

    command = get_command(app).commands["predict"]
    command.get_help(command.make_context("predict", ["--help"], resilient_parsing=True))
    helped = " ".join(capsys.readouterr().out.split())
    for task, options in (("object_detection", "conf (keep detections scoring at least this; default 0.25)"),
                          ("text_generation", "max_new_tokens (default 50)"), ("forecasting", "horizon")):
        assert f"{task}: {options}" in helped
    assert "image_classification" not in helped  # it takes no options


def test_a_capability_adds_its_verb_through_the_registry() -> None:
    """`dlforge forecast` is registered by its own module and added by the CLI, as any registered verb is: with its
    typed options, and the CLI's error handling (a DlforgeError: one line, exit 2)."""
    import typer
    from typer.testing import CliRunner

    from dlforge.cli import add_verbs, app
    from dlforge.errors import DlforgeError
    from dlforge.future import forecast_command
    from dlforge.registry import COMMANDS, Registry

    assert COMMANDS.get("forecast") is forecast_command
    (added,) = [c for c in app.registered_commands if c.name == "forecast"]
    assert added.callback.__wrapped__ is forecast_command

    verbs = Registry("command")

    @verbs.register("greet")
    def greet(name: str, loud: bool = False) -> None:
        """Say hello."""
        if name == "nobody":
            raise DlforgeError("nobody to greet")
        print(f"hello {name}{'!' if loud else ''}")

    cli_app = typer.Typer()

    @cli_app.callback()
    def root() -> None:
        """A CLI of registered verbs only."""

    add_verbs(cli_app, verbs)
    runner = CliRunner()
    assert "Say hello." in runner.invoke(cli_app, ["--help"]).output
    done = runner.invoke(cli_app, ["greet", "ada", "--loud"])
    assert done.exit_code == 0 and done.stdout == "hello ada!\n"
    failed = runner.invoke(cli_app, ["greet", "nobody"])
    assert failed.exit_code == 2 and "error: nobody to greet" in failed.stderr
