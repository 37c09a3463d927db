"""Every task is served through the same routes: the task's wire format turns its own test items into JSON,
and the server answers what the offline Predictor answers, natively and over KServe V2."""

from __future__ import annotations

import json

import pytest

import dlforge
from dlforge.registry import TASKS
from tests.serve.conftest import ThreadServer, assert_same_predictions

# every registered task (a tiny run of its example spec), and the text classifier fine-tuned from a hub model
KINDS = [*TASKS.names(), "hf_text"]
OPTIONS = {"text_generation": {"max_new_tokens": 4, "temperature": 0}, "object_detection": {"conf": 0.0001}}


@pytest.mark.parametrize("kind", KINDS)
def test_every_task_is_served(tiny_runs, kind: str) -> None:
    run = tiny_runs(kind)
    offline = dlforge.load(run)
    items = list(offline.evaluation_data()[0][:2])
    wire = offline.wire
    instances = [wire.encode(item) for item in items]
    options = OPTIONS.get(kind, {})
    expected = offline.predict([wire.decode(i, "test", offline.spec.serve.limits) for i in instances],
                               **options)
    with ThreadServer(run) as server, server.client() as c:
        meta = c.get("/metadata").json()
        assert meta["task"] == offline.meta["task"] and meta["input"]["kind"] == wire.kind
        native = c.post("/predict", json={"instances": instances, "parameters": options})
        assert native.status_code == 200, native.text
        assert_same_predictions(native.json()["predictions"], expected, tol=1e-4)
        data = [i if isinstance(i, str) else json.dumps(i) for i in instances]
        v2 = c.post(f"/v2/models/{server.served.name}/infer", json={
            "inputs": [{"name": "input", "shape": [len(data)], "datatype": "BYTES", "data": data}],
            "parameters": options})
        assert v2.status_code == 200, v2.text
        outputs = v2.json()["outputs"]
        assert {o["name"] for o in outputs} == set(expected[0])
        assert all(o["shape"][0] == len(items) for o in outputs)
        if wire.kind == "text":  # the length limit, before any tokenising
            limit = offline.spec.serve.limits.max_text_chars
            r = c.post("/predict", json={"instances": [instances[0], "x" * (limit + 1)]})
            assert r.status_code == 413 and r.json()["field"] == "instances[1]"


def test_the_onnx_backend_serves_the_same_answers(tiny_runs) -> None:
    from tests.serve.conftest import digit_pngs

    run = tiny_runs("image_classification")
    images = digit_pngs(8, seed=11)
    answers = {}
    for backend in ("torch", "onnx"):
        with ThreadServer(run, backend=backend) as server, server.client() as c:
            assert c.get("/metadata").json()["backend"] == backend
            answers[backend] = c.post("/predict", json={"instances": images}).json()["predictions"]
            platform = c.get(f"/v2/models/{server.served.name}").json()["platform"]
            assert platform == ("onnxruntime_onnx" if backend == "onnx" else "pytorch")
    assert [p["label"] for p in answers["onnx"]] == [p["label"] for p in answers["torch"]]
    assert_same_predictions(answers["onnx"], answers["torch"], tol=1e-4)
