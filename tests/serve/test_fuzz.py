"""No input is answered with a 500: arbitrary JSON values and byte strings (Hypothesis) through every task's wire
decoding, and through the routes of a real server of every task; and the requests that once were 500s."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlforge.errors import InputError
from dlforge.registry import TASKS
from tests.serve.conftest import ThreadServer

KINDS = TASKS.names()
FUZZ = {"deadline": None, "derandomize": True, "database": None, "suppress_health_check": list(HealthCheck)}

# Any JSON value Python's parser can produce (NaN, Infinity, lone surrogates and huge numbers included: it reads
# them all), and bytes.
text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=20)  # Cs: lone surrogates
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**308) | st.floats()
           | st.sampled_from([10**400, -(10**400), 1e308]) | text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=12)
values = json_values | st.binary(max_size=64)


@pytest.fixture(scope="module", params=KINDS)
def server(request, tiny_runs) -> Iterator[ThreadServer]:
    with ThreadServer(tiny_runs(request.param)) as s:
        yield s


def test_decode_takes_any_value_or_names_the_field(server) -> None:
    wire, limits = server.served.wire, server.served.settings.limits

    @settings(max_examples=100, **FUZZ)
    @given(values)
    def decode(value: object) -> None:
        try:
            wire.decode(value, "instances[0]", limits)
        except InputError as e:
            assert e.status in (400, 413) and e.field.startswith("instances[0]"), e

    decode()


def test_routes_answer_any_body_with_a_4xx_or_200(server) -> None:
    name = server.served.name
    with server.client() as c:
        @settings(max_examples=15, **FUZZ)
        @given(values)
        def post(value: object) -> None:
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            for path, body in (("/predict", raw), ("/predict", b'{"instances": [%s]}' % raw),
                               (f"/v2/models/{name}/infer", json.dumps({"inputs": [{
                                   "name": "x", "shape": [1], "datatype": "BYTES",
                                   "data": [raw.decode("utf-8", "replace")]}]}).encode())):
                r = c.post(path, content=body, headers={"content-type": "application/json"})
                assert r.status_code == 200 or 400 <= r.status_code < 500, (path, body[:200], r.text[:300])
                if r.status_code != 200:
                    assert r.json()["error"]

        post()


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("kind", ["tabular_classification"])
def test_the_inputs_that_were_500s_name_their_field(tiny_runs, kind: str) -> None:
    with ThreadServer(tiny_runs(kind)) as server, server.client() as c:
        name = server.served.name
        example = server.served.wire.example(server.served.predictor.meta)
        column = next(k for k, v in example.items() if isinstance(v, int | float) and not isinstance(v, bool))
        json_body = {"content-type": "application/json"}

        def with_number(token: str) -> bytes:
            row = json.dumps({**example, column: "@"}).replace('"@"', token)
            return b'{"instances": [%s]}' % row.encode()

        answers = {
            "deep /predict": c.post("/predict", content=b'{"instances": %s}' % _deep(10_000), headers=json_body),
            "deep v2": c.post(f"/v2/models/{name}/infer", headers=json_body, content=b'{"inputs": [{"name": "x", '
                              b'"shape": [1], "datatype": "BYTES", "data": %s}]}' % _deep(10_000)),
            "surrogate": c.post("/predict", content=b'{"instances": [{"\\ud800": 1}]}', headers=json_body),
            "10**400": c.post("/predict", content=with_number("1" + "0" * 400), headers=json_body),
            "NaN": c.post("/predict", content=with_number("NaN"), headers=json_body),
            "Infinity": c.post("/predict", content=with_number("-Infinity"), headers=json_body),
            "1e400 on v2": c.post(f"/v2/models/{name}/infer", headers=json_body, content=b'{"inputs": [{"name": '
                                  b'"x", "shape": [1], "datatype": "FP64", "data": [1e400]}]}'),
            "NaN in parameters": c.post("/predict", content=b'{"instances": [], "parameters": {"a": NaN}}',
                                        headers=json_body),
        }
        null = c.post("/predict", content=with_number("null"), headers=json_body)
    status = {k: r.status_code for k, r in answers.items()}
    assert status == dict.fromkeys(answers, 400), {k: r.text for k, r in answers.items()}
    fields = {k: r.json()["field"] for k, r in answers.items()}
    assert fields == {"deep /predict": "body", "deep v2": "body", "surrogate": "instances[0].\\ud800",
                      "10**400": f"instances[0].{column}", "NaN": f"instances[0].{column}",
                      "Infinity": f"instances[0].{column}", "1e400 on v2": "inputs[0].data[0]",
                      "NaN in parameters": "parameters.a"}
    assert "send null for a missing value" in answers["NaN"].json()["error"]
    assert null.status_code == 200  # null is the one missing value
