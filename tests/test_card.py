"""Every finished run has card.md: Hugging Face front matter that the hub's own parser reads back, and the
sections of Mitchell et al. 2019 filled from the run."""

from __future__ import annotations

import yaml
from huggingface_hub import ModelCard

import dlforge

SECTIONS = ["Model Details", "Intended Use", "Factors", "Metrics", "Evaluation Data", "Training Data",
            "Quantitative Analyses", "Ethical Considerations", "Caveats and Recommendations"]


def test_card_front_matter_and_sections(trained_run: dlforge.Run) -> None:
    text = (trained_run.path / "card.md").read_text()
    card = ModelCard(text)  # huggingface_hub parses the front matter and its model-index
    metrics = trained_run.read_eval()["metrics"]
    assert card.data.library_name == "dlforge" and "image-classification" in card.data.tags
    assert card.data.datasets == ["builtin:digits"]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["accuracy"] == round(metrics["accuracy"], 6) and set(results) == set(card.data.metrics)
    assert all(r.task_type == "image-classification" and r.dataset_split == "test" for r in card.data.eval_results)
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == SECTIONS
    meta = trained_run.read_meta()
    assert f"train {meta['sizes']['train']} / val {meta['sizes']['val']} / test {meta['sizes']['test']}" in text
    assert f"T = {meta['temperature']:.3g}" in text  # calibration, from meta
    assert "card.intended_use" in text  # what the run cannot know is asked for, not invented
    report = (trained_run.path / "report.html").read_text()
    assert "<h3>Model Details</h3>" in report and "<table>" in report.split("Model Details")[1]
    assert yaml.safe_load(text.split("---")[1])["model-index"][0]["name"] == "digits-test"


def test_card_takes_what_the_spec_states(tmp_path) -> None:
    from tests.conftest import digits_spec

    spec = dlforge.validate_spec({**digits_spec(epochs=1), "card": {
        "intended_use": "Teaching: reading 8x8 digits.", "license": "apache-2.0", "authors": "dlforge tests"}})
    run = dlforge.train(spec, runs_dir=tmp_path, progress=False)
    card = ModelCard((run.path / "card.md").read_text())
    assert card.data.license == "apache-2.0"
    assert "Teaching: reading 8x8 digits." in card.text and "card.intended_use" not in card.text
    assert "| Authors | dlforge tests |" in card.text
