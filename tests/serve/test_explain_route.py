"""`POST /explain` on a real server answers what `dlforge.explain` computes, and refuses bad requests by name."""

from __future__ import annotations

import base64

import numpy as np

import dlforge
from dlforge.explain import explain_json
from tests.serve.conftest import ThreadServer, png_bytes


def test_explain_route_equals_the_library(trained_run):
    predictor = dlforge.load(trained_run.path)
    items, _ = predictor.evaluation_data()
    images = [np.asarray(items[i])[..., 0] for i in range(2)]  # (8, 8) uint8
    with ThreadServer(trained_run.path) as server, server.client() as client:
        reply = client.post("/explain", json={"instances": [base64.b64encode(png_bytes(im)).decode()
                                                            for im in images], "method": "ig", "target": "3"})
        assert reply.status_code == 200, reply.text
        served = reply.json()["explanations"]
        bad = client.post("/explain", json={"instances": [base64.b64encode(png_bytes(images[0])).decode()],
                                            "method": "shap"})
        unknown = client.post("/explain", json={"instances": [base64.b64encode(png_bytes(images[0])).decode()],
                                                "target": "eleven"})
        too_many = client.post("/explain", json={"instances": ["x"] * 17})
    local = explain_json(predictor, [im[..., None] for im in images], method="ig", target="3")
    for s, lo in zip(served, local, strict=True):
        assert s["target"]["class"] == "3" and s["method"] == "ig"
        assert s["score"] == lo["score"] and s["checks"]["completeness"]["relative_error"] < 0.01
        assert s["picture"]["format"] == "png"
        assert base64.b64decode(s["picture"]["base64"]).startswith(b"\x89PNG")
    assert bad.status_code == 400 and "shap" in bad.json()["error"]
    assert unknown.status_code == 400 and "eleven" in unknown.json()["error"] and "9" in unknown.json()["error"]
    assert too_many.status_code == 422 and "instances" in too_many.json()["error"]
