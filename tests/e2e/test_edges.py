"""Issue 12 end to end, on a real `tlserve serve` (gateway + embedded model server processes): the decoded-pixel
budget at both layers, one-line decode errors without graph text, over-long model names, and an event loop that
big REST bodies do not block."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator

import grpc
import httpx
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from service.client import GRPC_OPTIONS, predict_request
from tests.conftest import random_images
from tests.e2e.conftest import GATEWAY_ENV, MODEL_NAME
from tests.support.gateway import running_serve

pytestmark = pytest.mark.e2e
# /healthz round trips that must complete while a big body is converted (thousands do; a blocked loop let ~13 in).
MIN_PROBES_DURING_CONVERSION = 100


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """6000x6000 of one colour: 36 Mpx (under the 40 Mpx per-image limit) in about 100 KB."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def grpc_error(target: str, request) -> grpc.RpcError:
    with grpc.insecure_channel(target, options=GRPC_OPTIONS) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=60)
    return caught.value


def test_two_36_megapixel_pngs_are_refused_from_headers_by_the_gateway_and_the_model_server(gateway, big_png):
    files = [("files", (f"{index}.png", big_png, "image/png")) for index in range(2)]
    response = httpx.post(f"{gateway.http_url}/predict", files=files, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["message"].startswith("the request's images decode to 72000000 pixels")
    if gateway.model_server_port is None:
        return  # TF Serving upstream: it has no such budget
    # The model server is reachable directly, so it keeps the same budget itself.
    error = grpc_error(gateway.model_server_target, predict_request(MODEL_NAME, [big_png, big_png]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("the request's images decode to 72000000 pixels, more than the per-request")


def flat_png(side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_embedded_model_server_keeps_the_budget_given_to_tlserve_serve(e2e_models_dir, tmp_path):
    budget = 5000  # pixels: one 50x50 image fits, one 100x100 does not
    args = ["--max-request-pixels", str(budget)]
    with running_serve(e2e_models_dir, env=GATEWAY_ENV, extra_args=args, log_path=tmp_path / "serve.log") as serving:
        files = [("files", ("big.png", flat_png(100), "image/png"))]
        response = httpx.post(f"{serving.http_url}/predict", files=files, timeout=60)
        # Sent straight to the child (reachable on loopback), it is refused with the same budget, not the default.
        error = grpc_error(serving.model_server_target, predict_request(MODEL_NAME, [flat_png(100)]))
        with grpc.insecure_channel(serving.model_server_target, options=GRPC_OPTIONS) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            within = stub.Predict(predict_request(MODEL_NAME, [flat_png(50)]), timeout=60)
    assert response.status_code == 413
    assert f"per-request budget of {budget};" in response.json()["error"]["message"]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(
        f"the request's images decode to 10000 pixels, more than the per-request budget of {budget};"
    )
    assert "probabilities" in within.outputs


def test_a_truncated_image_is_named_in_one_line_without_graph_text_over_grpc_and_rest(gateway):
    good, other = random_images(2, seed=11)
    truncated = other[: len(other) // 2]
    error = grpc_error(gateway.grpc_target, predict_request(MODEL_NAME, [good, truncated]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    instances = [{"b64": base64.b64encode(image).decode()} for image in (good, truncated)]
    rest = httpx.post(f"{gateway.http_url}/v1/models/{MODEL_NAME}:predict", json={"instances": instances}, timeout=60)
    assert rest.status_code == 400
    for message in (error.details(), rest.json()["error"]):
        assert "image 1" in message
        assert "\n" not in message
        assert "Graph execution" not in message
        assert "node" not in message


def test_a_20000_character_model_name_is_404_not_429_over_http_and_grpc(gateway):
    name = "m" * 20_000
    image = random_images(1)[0]
    instances = [{"b64": base64.b64encode(image).decode()}]
    rest = httpx.post(f"{gateway.http_url}/v1/models/{name}:predict", json={"instances": instances}, timeout=60)
    assert rest.status_code == 404
    assert "(20000 characters)" in rest.json()["error"]
    error = grpc_error(gateway.grpc_target, predict_request(name, [image]))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def within_limit_pixel_body(rows: int = 64, side: int = 160) -> bytes:
    """~23 MB of pixel values, 64 rows (the limit): parsed and converted in full, then refused by its last value,
    so the answer comes straight after the conversion, with no upstream call after it."""
    pixels = np.full((rows, side, side, 3), 128, np.uint8).tolist()
    pixels[-1][-1][-1][-1] = 256  # out of uint8's range: found only when the whole body is converted
    body = {"signature_name": "predict_pixels", "instances": pixels}
    return json.dumps(body, separators=(",", ":")).encode()


async def healthz_answers_during(gateway, body: bytes) -> tuple[httpx.Response, int]:
    """Send `body`; once it is uploaded, probe /healthz back to back until its answer: (answer, probes done)."""
    uploaded = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]
        uploaded.set()  # httpx asks for the next chunk only after writing the last one

    async with (
        httpx.AsyncClient(base_url=gateway.http_url, timeout=120) as sender,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=120) as probe,
    ):
        await probe.get("/healthz")  # connected before the measurement
        url = f"/v1/models/{MODEL_NAME}:predict"
        answer = asyncio.create_task(sender.post(url, content=chunks(), headers={"content-type": "application/json"}))
        await uploaded.wait()
        probes = 0
        while not answer.done():
            assert (await probe.get("/healthz")).status_code == 200
            probes += 1
        return await answer, probes


def test_healthz_keeps_answering_while_a_big_rest_body_is_converted(gateway):
    # json.loads and np.asarray hold the GIL: converted on the event loop (or in a thread), a 23 MB body held
    # every other request for the whole conversion: only ~13 probes got in (while the gateway read the body's tail).
    # A worker process converts it now, and the loop keeps answering: many probes complete before the answer.
    response, probes = asyncio.run(healthz_answers_during(gateway, within_limit_pixel_body()))
    assert response.status_code == 400
    assert response.json()["error"] == (
        "cannot convert the input to a DT_UINT8 tensor: Python integer 256 out of bounds for uint8"
    )
    assert probes >= MIN_PROBES_DURING_CONVERSION, f"only {probes} /healthz answers during the conversion"
