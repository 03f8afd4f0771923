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
from tests.service.gateway.fakes import FakeModelServer, start_fake_upstream

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[3]
READY = re.compile(rb"gateway ready: http :(\d+), grpc :(\d+)")
GATEWAY_MAIN = """
import logging, sys
from service.gateway.server import serve_forever
from service.gateway.settings import Settings
logging.basicConfig(level=logging.INFO)
serve_forever(Settings(upstream=sys.argv[1], http_host="127.0.0.1", http_port=0, grpc_port=0))
"""


async def read_until_ready(stream: asyncio.StreamReader) -> int:
    while line := await stream.readline():
        if match := READY.search(line):
            return int(match.group(1))
    raise AssertionError("the gateway exited before it was ready")


def test_sigterm_finishes_in_flight_requests_and_exits_cleanly():
    async def scenario():
        upstream, port, _ = await start_fake_upstream(FakeModelServer(delay_s=1.0))
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", GATEWAY_MAIN, f"127.0.0.1:{port}", stderr=asyncio.subprocess.PIPE, env=env
        )
        try:
            http_port = await asyncio.wait_for(read_until_ready(process.stderr), 120)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as client:
                files = [("files", ("a.png", random_images(1)[0], "image/png"))]
                in_flight = asyncio.create_task(client.post("/predict", files=files))
                await asyncio.sleep(0.4)
                process.send_signal(signal.SIGTERM)
                response = await in_flight
            log = await asyncio.wait_for(process.stderr.read(), 60)
            return response.status_code, await asyncio.wait_for(process.wait(), 60), log
        finally:
            if process.returncode is None:
                process.kill()
            await upstream.stop(None)

    status, exit_code, log = asyncio.run(scenario())
    assert status == 200
    assert exit_code == 0
    assert b"gateway stopped" in log
