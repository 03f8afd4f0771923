"""`serve_forever` in a real process: SIGTERM lets the in-flight request finish, then the process exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import random_images
from tests.service.gateway.fakes import GatedModelServer, start_fake_upstream

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[3]
READY = re.compile(rb"gateway ready: http :(\d+), grpc :(\d+)")
STOPPING = re.compile(rb"gateway stopping")  # logged by service.gateway.server once the signal has started the shutdown
GATEWAY_MAIN = """
import logging, sys
from service.gateway.server import serve_forever
from service.gateway.settings import Settings
logging.basicConfig(level=logging.INFO)
serve_forever(
    Settings(
        upstream=sys.argv[1], http_host="127.0.0.1", http_port=0, grpc_port=0, default_model="demo",
        request_timeout_s=60, shutdown_grace_s=60,
    )
)
"""


async def read_until(stream: asyncio.StreamReader, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
    """Read the gateway's log up to the first line matching `pattern`."""
    while line := await stream.readline():
        if match := pattern.search(line):
            return match
    raise AssertionError(f"the gateway exited before logging {pattern!r}")


def test_sigterm_finishes_in_flight_requests_and_exits_cleanly():
    async def scenario():
        fake = GatedModelServer()
        upstream, port, _ = await start_fake_upstream(fake)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", GATEWAY_MAIN, f"127.0.0.1:{port}", stderr=asyncio.subprocess.PIPE, env=env
        )
        try:
            ready = await asyncio.wait_for(read_until(process.stderr, READY), 120)
            http_port = int(ready.group(1))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as client:
                files = [("files", ("a.png", random_images(1)[0], "image/png"))]
                in_flight = asyncio.create_task(client.post("/predict", files=files))
                await asyncio.wait_for(fake.arrived.wait(), 60)  # the request is in flight, held by the upstream
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(read_until(process.stderr, STOPPING), 60)  # the shutdown has begun
                assert not in_flight.done()
                fake.release.set()
                response = await in_flight
            log = await asyncio.wait_for(process.stderr.read(), 60)
            return response.status_code, await asyncio.wait_for(process.wait(), 60), log
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await upstream.stop(None)

    status, exit_code, log = asyncio.run(scenario())
    assert status == 200
    assert exit_code == 0
    assert b"gateway stopped" in log
