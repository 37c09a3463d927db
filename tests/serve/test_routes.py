"""Every route of the server answers as its protocol says, with the offline Predictor's predictions."""

from __future__ import annotations

import base64
import json

import pytest

import dlforge
from dlforge.serve.metrics import DRIFT_GAUGES
from tests.serve.conftest import ThreadServer, assert_same_predictions, digit_pngs


@pytest.fixture(scope="module")
def offline(trained_run):
    return dlforge.load(trained_run.path)


def test_native_predict_equals_the_predictor(digits_server, offline) -> None:
    images = digit_pngs(5)
    with digits_server.client() as c:
        r = c.post("/predict", json={"instances": images})
    assert r.status_code == 200
    assert r.headers["x-model-version"] == digits_server.served.version
    expected = offline.predict([base64.b64decode(i) for i in images])  # PIL reads the same bytes
    assert_same_predictions(r.json()["predictions"], expected)


def test_multipart_upload_and_raw_body(digits_server, offline) -> None:
    pngs = [base64.b64decode(i) for i in digit_pngs(2, seed=1)]
    expected = offline.predict(pngs)
    with digits_server.client() as c:
        upload = c.post("/predict", files=[("file", ("a.png", pngs[0], "image/png")),
                                           ("file", ("b.png", pngs[1], "image/png"))])
        raw = c.post("/invocations", content=pngs[1], headers={"content-type": "image/png"})
    assert upload.status_code == 200 and raw.status_code == 200
    assert_same_predictions(upload.json()["predictions"], expected)
    assert_same_predictions(raw.json()["predictions"], expected[1:])


def test_metadata_health_and_docs(digits_server, trained_run) -> None:
    with digits_server.client() as c:
        meta = c.get("/metadata").json()
        assert meta["task"] == "image_classification"
        assert meta["classes"] == trained_run.read_meta()["classes"]
        assert meta["input"]["kind"] == "image" and meta["version"] == digits_server.served.version
        assert c.get("/health/live").json() == {"status": "live"}
        assert c.get("/health/ready").status_code == 200 and c.get("/ping").status_code == 200
        spec = c.get("/openapi.json").json()
        body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
        assert body["application/json"]["schema"]["properties"]["instances"]["items"] == meta["input"]["schema"]
        assert "multipart/form-data" in body
        assert {"/v2/models/{name}/infer", "/invocations", "/metadata"} <= set(spec["paths"])
        assert "swagger-ui" in c.get("/docs").text
        assert "<form" in c.get("/").text


def test_kserve_v2(digits_server, offline) -> None:
    name = digits_server.served.name
    images = digit_pngs(3, seed=2)
    expected = offline.predict([base64.b64decode(i) for i in images])
    with digits_server.client() as c:
        assert c.get("/v2").json()["name"] == "dlforge"
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get(f"/v2/models/{name}/ready").status_code == 200
        r = c.post(f"/v2/models/{name}/infer", json={
            "id": "req-1", "inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": images}]})
        assert r.status_code == 200
        answer = r.json()
        assert answer["model_name"] == name and answer["id"] == "req-1"
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert outputs["label"] == {"name": "label", "datatype": "BYTES", "shape": [3],
                                    "data": [p["label"] for p in expected]}
        assert outputs["confidence"]["data"] == pytest.approx([p["confidence"] for p in expected], abs=1e-6)
        assert_same_predictions([json.loads(p) for p in outputs["probabilities"]["data"]],
                                [p["probabilities"] for p in expected])
        # the warm-up prediction told the model metadata its outputs
        model = c.get(f"/v2/models/{name}").json()
        assert model["versions"] == [digits_server.served.version] and model["platform"] == "pytorch"
        assert {o["name"] for o in model["outputs"]} == {"label", "confidence", "probabilities"}
        # a raw UINT8 tensor (N, H, W) is the same image as its PNG
        pixels = offline_pixels(images[0])
        r = c.post(f"/v2/models/{name}/infer", json={"inputs": [
            {"name": "image", "shape": [1, *pixels.shape], "datatype": "UINT8", "data": pixels.ravel().tolist()}],
            "outputs": [{"name": "label"}]})
        assert r.json()["outputs"] == [{"name": "label", "datatype": "BYTES", "shape": [1],
                                        "data": [expected[0]["label"]]}]


def offline_pixels(b64: str):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_vertex_ai_routes_from_the_environment(trained_run) -> None:
    env = {"AIP_PREDICT_ROUTE": "/v1/endpoints/7/deployedModels/3:predict", "AIP_HEALTH_ROUTE": "/vertex/health"}
    images = digit_pngs(2, seed=3)
    with ThreadServer(trained_run.path, env=env) as server, server.client() as c:
        assert c.get("/vertex/health").status_code == 200
        r = c.post(env["AIP_PREDICT_ROUTE"], json={"instances": images, "parameters": {}})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2
        assert c.get("/metadata").status_code == 200  # the native routes stay


def test_metrics_count_requests_by_route_and_status(digits_server) -> None:
    with digits_server.client() as c:
        before = _counter(c.get("/metrics").text, 'route="/predict",status="400"')
        c.post("/predict", json={"instances": ["not base64!"]})
        text = c.get("/metrics").text
    assert _counter(text, 'route="/predict",status="400"') == before + 1
    for name in ("dlforge_request_duration_seconds_bucket", "dlforge_batch_size_bucket", "dlforge_requests_in_flight",
                 "dlforge_model_load_seconds", "dlforge_model_info"):
        assert name in text
    # drift monitoring is off: no drift gauge, rather than a 0 that an alert rule reads as "no drift"
    assert not [name for name in DRIFT_GAUGES if name in text]


def test_errors_name_the_field_the_input_came_in(digits_server) -> None:
    garbage = b"\x00 garbage, not a PNG"
    good = base64.b64decode(digit_pngs(1)[0])
    form = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends without -H
    with digits_server.client() as c:
        upload = c.post("/predict", files=[("file", ("garbage.png", garbage, "image/png"))])
        second = c.post("/predict", files=[("file", ("a.png", good, "image/png")),
                                           ("file", ("b.png", garbage, "image/png"))])
        raw = c.post("/invocations", content=garbage, headers={"content-type": "image/png"})
        not_json = c.post("/predict", content=b"hello", headers=form)
        json_as_form = c.post("/predict", content=json.dumps({"instances": digit_pngs(1)}), headers=form)
    errors = {r.json()["error"].split(":", 1)[0]: r.status_code for r in (upload, second, raw, not_json)}
    assert errors == {"file": 400, "file[1]": 400, "body": 400}
    assert upload.json()["error"].startswith("file: not an image")
    assert raw.json()["error"].startswith("body: not an image")
    assert not_json.json()["error"].startswith("body: not JSON") and not_json.json()["field"] == "body"
    assert json_as_form.status_code == 200  # a JSON body sent without its content type is read as JSON


def _counter(text: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("dlforge_requests_total{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0



def test_a_v2_uint8_image_is_answered_and_logged_with_the_request_log_on(trained_run, tmp_path) -> None:
    import numpy as np

    from dlforge.request_log import read_log

    log = tmp_path / "requests.sqlite"
    pixels = offline_pixels(digit_pngs(1, seed=4)[0])
    with ThreadServer(trained_run.path, overrides=("serve.request_log.sample=1",),
                      env={"DLFORGE_REQUEST_LOG": str(log)}) as server, server.client() as c:
        r = c.post(f"/v2/models/{server.served.name}/infer", json={"inputs": [
            {"name": "image", "shape": [1, *pixels.shape], "datatype": "UINT8", "data": pixels.ravel().tolist()}]})
        metrics = c.get("/metrics").text
    assert r.status_code == 200, r.text  # was 500: "not JSON serialisable: ndarray", after the prediction was made
    assert "dlforge_request_log_dropped 0.0" in metrics
    rows = read_log(log)
    assert len(rows) == 1 and rows[0]["route"].endswith("/infer")
    assert np.array_equal(np.asarray(rows[0]["input"], np.uint8), pixels)  # logged as it arrived: the monitor reads it


def test_a_request_log_row_that_cannot_be_written_is_counted_and_dropped(tmp_path) -> None:
    from dlforge.request_log import RequestLog, read_log

    log = RequestLog(tmp_path / "requests.sqlite", sample=1.0, model_version="m:1")
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    log.add("/predict", [{"a set": {1}}, deep, "fine"], [{"label": "x"}] * 3, 1.0)  # never raises
    log.close()
    assert log.dropped == 2
    assert [row["input"] for row in read_log(tmp_path / "requests.sqlite")] == ["fine"]
