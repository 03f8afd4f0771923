"""create_app: over the server's shared core, or over a core of its own built on a backend."""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient

from service.gateway.core.gateway_core import GatewayCore
from service.gateway.core.metrics import GatewayMetrics
from service.gateway.http.app import create_app
from tests.conftest import random_images
from tests.service.gateway.conftest import make_settings
from tests.service.gateway.fakes import image_label


def test_an_app_given_a_core_answers_with_it_and_leaves_closing_it_to_the_owner(fake_upstream, monkeypatch):
    settings = make_settings()
    core = GatewayCore(settings, fake_upstream, GatewayMetrics(), random.Random(0))
    closed: list[GatewayCore] = []

    async def record_close() -> None:
        closed.append(core)

    monkeypatch.setattr(core, "close", record_close)
    image = random_images(1)[0]
    with TestClient(create_app(settings, core=core)) as client:
        response = client.post("/predict", files=[("files", ("a.png", image, "image/png"))])
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == image_label(image)
    assert core.metrics.requests.labels(protocol="http", route="/predict", code="200")._value.get() == 1
    assert closed == []


def test_create_app_takes_exactly_one_of_backend_and_core(fake_upstream):
    settings = make_settings()
    core = GatewayCore(settings, fake_upstream, GatewayMetrics(), random.Random(0))
    with pytest.raises(TypeError, match="exactly one of backend= or core="):
        create_app(settings)
    with pytest.raises(TypeError, match="exactly one of backend= or core="):
        create_app(settings, fake_upstream, core=core)
