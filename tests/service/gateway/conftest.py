"""Gateway test fixtures: settings, the fake upstream and a TestClient over create_app."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from service.gateway.http.app import create_app
from service.gateway.settings import Settings
from tests.service.gateway.fakes import FakeModelServer


def make_settings(**overrides) -> Settings:
    defaults = {
        "upstream": "127.0.0.1:1",
        "batch_wait_timeout_s": 0.001,
        "http_port": 0,
        "grpc_port": 0,
        "default_model": "demo",
        "shutdown_drain_s": 0,
    }
    return Settings(**(defaults | overrides))


@pytest.fixture
def fake_upstream() -> FakeModelServer:
    return FakeModelServer()


@pytest.fixture
def make_client(fake_upstream: FakeModelServer) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides) -> TestClient:
        app = create_app(make_settings(**overrides), backend=fake_upstream, rng=random.Random(0))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
