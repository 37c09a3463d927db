"""The spec: validation, one-line errors with file:line and field path, overrides, JSON Schema."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from dlforge import SpecError, load_spec
from tests.conftest import cli, digits_spec, write_spec

GOOD = textwrap.dedent("""\
    name: digits-cnn
    task: image_classification
    data:
      source: builtin:digits
      split: {val: 0.1, test: 0.2, seed: 0}
    model: {name: resnet_small, pretrained: null}
    train:
      epochs: 10
      batch_size: 64
      optimizer: {name: adamw, lr: 1.0e-3}
      scheduler: cosine
      precision: auto
      seed: 0
    """)


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_good_spec_loads_with_defaults(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path, GOOD))
    assert spec.train.epochs == 10
    assert spec.train.optimizer.lr == 1e-3
    assert spec.data.on_error == "error"  # a default
    assert spec.train.early_stopping is None


def test_overrides_are_parsed_as_yaml(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path, GOOD), ["train.epochs=3", "model.name=timm:resnet18",
                                                 "train.early_stopping={patience: 2}"])
    assert spec.train.epochs == 3 and isinstance(spec.train.epochs, int)
    assert spec.model.name == "timm:resnet18"
    assert spec.train.early_stopping.patience == 2


def test_relative_data_paths_are_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    spec = load_spec(spec_file(tmp_path, GOOD.replace("builtin:digits", "images")))
    assert spec.data.source == str((tmp_path / "images").resolve())


@pytest.mark.parametrize(("edit", "expected"), [
    # (text replacement, fragments the one-line message must hold)
    (("  epochs: 10", "  epoks: 10"), ["spec.yaml:8:", "train.epoks", "unknown field", "did you mean 'epochs'"]),
    (("lr: 1.0e-3", "lr: -1"), ["spec.yaml:10:", "train.optimizer.lr", "-1", "greater than 0"]),
    (("name: adamw", "name: adamx"), ["spec.yaml:10:", "train.optimizer.name", "'adamx'",
                                      "did you mean 'adamw'"]),
    (("task: image_classification", "task: image_clasification"),
     ["spec.yaml:2:", "task", "'image_clasification'", "did you mean 'image_classification'"]),
    (("name: resnet_small", "name: resnet_smal"), ["spec.yaml:6:", "model.name", "did you mean 'resnet_small'"]),
    (("name: resnet_small", "name: timm:resnet1888"), ["model.name", "unknown timm model", "resnet18"]),
    (("  seed: 0\n", "  seed: 0\n  precision: fp8\n"), ["spec.yaml:12:", "train.precision", "'fp8'"]),
    (("batch_size: 64", "batch_size: many"), ["spec.yaml:9:", "train.batch_size", "'many'", "integer"]),
    (("{val: 0.1, test: 0.2, seed: 0}", "{val: 0.5, test: 0.5}"), ["data.split.test", "too little to train"]),
    (("  source: builtin:digits", "  source: builtin:digits\n  limit: 100\n  fraction: 0.5"),
     ["spec.yaml:3:", "data: give data.limit or data.fraction, not both"]),
    (("  source: builtin:digits", "  source: builtin:digits\n  limit: 0"), ["spec.yaml:5:", "data.limit", "0",
                                                                            "greater than or equal to 1"]),
    (("  source: builtin:digits", "  source: builtin:digits\n  fraction: 1.5"), ["data.fraction", "1.5",
                                                                                 "less than or equal to 1"]),
])
def test_bad_spec_is_one_clear_line(tmp_path: Path, edit: tuple[str, str], expected: list[str]) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    with pytest.raises(SpecError) as info:
        load_spec(spec_file(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_required_field(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"data: required field is missing"):
        load_spec(spec_file(tmp_path, "name: x\ntask: image_classification\n"))


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"spec.yaml:5: not valid YAML"):
        load_spec(spec_file(tmp_path, GOOD.replace("  split: {val: 0.1", "  split: {val: 0.1,,]")))


def test_bad_override_names_the_override(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^--set train.epochs=abc: train.epochs: 'abc'"):
        load_spec(spec_file(tmp_path, GOOD), ["train.epochs=abc"])
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        load_spec(spec_file(tmp_path, GOOD), ["train.epochs"])


def test_cli_bad_spec_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = spec_file(tmp_path, GOOD.replace("  epochs: 10", "  epoks: 10"))
    proc = cli("train", path, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "spec.yaml:8: train.epoks: unknown field (did you mean 'epochs'?)" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started
    debug = cli("--debug", "train", path, "--runs-dir", tmp_path / "runs")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_schema_validates_specs(tmp_path: Path) -> None:
    proc = cli("schema", check=True)
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(GOOD), schema)
    jsonschema.validate(digits_spec(), schema)
    bad = yaml.safe_load(GOOD)
    bad["train"]["epoks"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_validate_command_prints_resolved_spec(tmp_path: Path) -> None:
    proc = cli("validate", write_spec(tmp_path / "s.yaml", digits_spec()), "--set", "train.epochs=7", check=True)
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["train"]["epochs"] == 7
    assert resolved["train"]["scheduler"] == "cosine"  # defaults are filled in


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_example_spec_is_valid(path: Path) -> None:
    spec = load_spec(path)
    schema = json.loads(cli("schema", check=True).stdout)
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)  # editors see the same rules
    assert spec.name


def test_a_spec_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from dlforge.spec import MAX_SPEC_BYTES

    huge = tmp_path / "huge.yaml"  # the 1 GB line, sparse: it takes no disk, and reading it whole would
    with open(huge, "wb") as f:    # take a gigabyte of memory
        f.write(b"name: x\ntask: image_classification\n# ")
        f.truncate(1 << 30)
    with pytest.raises(SpecError, match=rf"^{huge}: not a spec: larger than 1 MB \(a spec is a page of YAML\)$"):
        load_spec(huge)
    with pytest.raises(SpecError, match=r"^\S*/dev/zero: not a spec: larger than 1 MB"):
        load_spec("/dev/zero")  # no size to stat: a stream is read to one byte past the limit, no further
    at_limit = write_spec(tmp_path / "ok.yaml", digits_spec())
    at_limit.write_text(at_limit.read_text() + "#" * (MAX_SPEC_BYTES - at_limit.stat().st_size - 1) + "\n")
    assert at_limit.stat().st_size == MAX_SPEC_BYTES and load_spec(at_limit).name == digits_spec()["name"]
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError, match=r"latin1.yaml: not UTF-8 text \(byte 9\)"):
        load_spec(tmp_path / "latin1.yaml")
