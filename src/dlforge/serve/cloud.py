"""The routes SageMaker and Vertex AI call, answered as the native /predict and /health/ready are.

    SageMaker  POST /invocations  GET /ping
    Vertex AI  POST $AIP_PREDICT_ROUTE  GET $AIP_HEALTH_ROUTE, when set (a route the server has already is not
               added twice)
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from dlforge.serve.openapi import predict_route_doc
from dlforge.serve.routes import READY_RESPONSES, predict_endpoint, ready_endpoint
from dlforge.serve.served import Served


def add_cloud_routes(app: FastAPI, s: Served) -> None:
    predict_path = os.environ.get("AIP_PREDICT_ROUTE") or "/invocations"
    health_path = os.environ.get("AIP_HEALTH_ROUTE") or "/ping"
    for path in sorted({"/invocations", predict_path} - {"/predict"}):
        app.add_api_route(path, predict_endpoint(s), methods=["POST"], summary="Predict",
                          openapi_extra=predict_route_doc(s), tags=["predict"])
    for path in sorted({"/ping", health_path} - {"/health/ready"}):
        app.add_api_route(path, ready_endpoint(s), methods=["GET"], summary="Ready to answer", tags=["health"],
                          responses=READY_RESPONSES)
    s.health_routes.add(health_path)  # never needs the API key
