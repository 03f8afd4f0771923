"""Schemathesis against the gateway's OpenAPI schema, in-process over a fake upstream: no input earns a 5xx."""

from __future__ import annotations

import random

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.gateway.http.app import create_app
from tests.service.gateway.conftest import make_settings
from tests.service.gateway.fakes import FakeModelServer


@pytest.fixture(scope="module")
def api_schema():
    app = create_app(make_settings(), backend=FakeModelServer(), rng=random.Random(0))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_request_earns_a_server_error(api_schema):
    # schemathesis' pytest plugin does not load under this pytest; drive its hypothesis strategies directly.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13
    for operation in operations:

        @given(case=operation.as_strategy(), known_model=st.booleans())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case, known_model):
            if known_model and case.path_parameters and "name" in case.path_parameters:
                case.path_parameters["name"] = "demo"  # reach past the 404 into body and upstream handling
            response = case.call()
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                assert "error" in response.json(), where

        check()


def test_openapi_documents_predict_examples_and_error_statuses(api_schema):
    raw = api_schema.raw_schema
    predict = raw["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "application/json"} <= set(predict["requestBody"]["content"])
    assert "example" in predict["requestBody"]["content"]["application/json"]
    assert {"400", "401", "404", "413", "415", "422", "503", "504"} <= set(predict["responses"])
    assert "/v1/models/{name}:predict" in raw["paths"]
    schemes = raw["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"}.items() <= schemes["APIKeyHeader"].items()
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
