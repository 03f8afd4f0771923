"""HTTP/1.1 below FastAPI (issue 12): malformed requests get the JSON error shape; a stopping gateway tells
keep-alive clients to reconnect (`Connection: close`) instead of resetting their next request."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from service.gateway.server import GatewayPorts, serve
from tests.conftest import random_images
from tests.service.gateway.conftest import make_settings
from tests.service.gateway.fakes import FakeModelServer, GatedModelServer, start_fake_upstream


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)  # the gateway closes the connection after a 400
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {name.lower(): value for name, value in headers.items()}, body


async def started_gateway(fake: FakeModelServer, **overrides):
    upstream, upstream_port, _ = await start_fake_upstream(fake)
    settings = make_settings(upstream=f"127.0.0.1:{upstream_port}", http_host="127.0.0.1", **overrides)
    stop = asyncio.Event()
    ready: asyncio.Future[GatewayPorts] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop=stop, on_ready=ready.set_result))
    ports = await asyncio.wait_for(ready, 30)
    return ports, stop, task, upstream


MALFORMED = {
    "nul_in_header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
    "duplicate_content_length": (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc"
    ),
    "one_megabyte_url": b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}


EXPECTED_REASONS = {  # h11's reason, in front of the offending bytes where it quotes them
    "nul_in_header": "malformed HTTP request: illegal header line",
    "duplicate_content_length": "malformed HTTP request: conflicting Content-Length headers",
    "one_megabyte_url": "malformed HTTP request: the request line and headers exceed 16384 bytes",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_http_is_answered_with_the_json_error_shape(name):
    async def scenario():
        ports, stop, task, upstream = await started_gateway(FakeModelServer())
        try:
            return await raw_exchange(ports.http_port, MALFORMED[name])
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await upstream.stop(None)

    status, headers, body = asyncio.run(scenario())
    assert status == 400
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request"
    assert error["message"].startswith(EXPECTED_REASONS[name])
    assert len(error["message"]) < 300


def test_a_stopping_gateway_answers_keep_alive_requests_with_connection_close():
    async def scenario():
        fake = GatedModelServer()
        ports, stop, task, upstream = await started_gateway(fake, shutdown_drain_s=3, request_timeout_s=30)
        files = [("files", ("a.png", random_images(1)[0], "image/png"))]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http_port}", timeout=30) as client:
                before = await client.get("/healthz")
                in_flight = asyncio.create_task(client.post("/predict", files=files))
                await asyncio.wait_for(fake.arrived.wait(), 30)
                stop.set()
                await asyncio.sleep(0.2)  # the gateway is now draining
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http_port}", timeout=30) as other:
                    warm = await other.get("/healthz")  # opens a keep-alive connection during the drain
                    reused = await other.get("/healthz")
                fake.release.set()
                answered = await in_flight
            return before, answered, warm, reused
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await upstream.stop(None)

    before, answered, warm, reused = asyncio.run(scenario())
    assert before.status_code == 200
    assert "connection" not in before.headers  # keep-alive while serving normally
    assert answered.status_code == 200
    assert answered.headers["connection"] == "close"
    assert warm.status_code == 200
    assert warm.headers["connection"] == "close"
    assert reused.status_code == 200  # a new connection, because the previous answer said close
    assert reused.headers["connection"] == "close"
