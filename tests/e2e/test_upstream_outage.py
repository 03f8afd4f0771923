"""Real processes: a gateway whose model server goes away answers 503 within its deadline, then recovers by itself."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import random_images
from tests.e2e.conftest import GATEWAY_ENV
from tests.support.gateway import running_serve
from tests.support.modelserver import ModelServerProcess
from tlserve.processes import free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REQUEST_TIMEOUT_S = float(GATEWAY_ENV["TLSERVE_REQUEST_TIMEOUT_S"])
# The client's own timeout while the upstream is down: the gateway's deadline plus generous slack. A gateway that
# hangs fails the test with a timeout error; one that waited out its deadline answers 504, not 503. Nothing is timed.
ANSWER_BOUND_S = REQUEST_TIMEOUT_S + 30.0
RECOVERY_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def model_server(e2e_models_dir, tmp_path_factory):
    server = ModelServerProcess(e2e_models_dir, free_port(), tmp_path_factory.mktemp("logs") / "model-server.log")
    server.start()
    yield server
    server.stop()


def post_image(url: str, image: bytes) -> httpx.Response:
    return httpx.post(f"{url}/predict", files=[("files", ("x.png", image, "image/png"))], timeout=ANSWER_BOUND_S)


def test_upstream_outage_gives_503_within_deadline_then_gateway_recovers(model_server, tmp_path):
    image = random_images(1, seed=31)[0]
    with running_serve(upstream=model_server.target, env=GATEWAY_ENV, log_path=tmp_path / "serve.log") as gateway:
        assert post_image(gateway.http_url, image).status_code == 200

        model_server.stop()
        # 503 backend_unavailable (not 504 deadline_exceeded) within the client's bound: the gateway answered
        # from the refused connection, within its own deadline, instead of hanging or waiting the deadline out.
        down = post_image(gateway.http_url, image)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "backend_unavailable"
        assert httpx.get(f"{gateway.http_url}/readyz", timeout=30).status_code == 503
        assert httpx.get(f"{gateway.http_url}/healthz", timeout=30).status_code == 200

        model_server.start()

        def recovered() -> bool:
            return post_image(gateway.http_url, image).status_code == 200

        wait_until(
            recovered, timeout_s=RECOVERY_TIMEOUT_S, what="gateway recovered", interval_s=0.5, details=gateway.log_tail
        )
        assert httpx.get(f"{gateway.http_url}/readyz", timeout=30).status_code == 200
        assert gateway.process.poll() is None
