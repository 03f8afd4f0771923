"""Big TF Serving REST bodies are converted in a worker process with the same answers and errors as in-process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from service.gateway.errors import GatewayError
from service.gateway.http import json_offload
from service.gateway.http.json_offload import BodyConverter
from tlserve.protocol import types_pb2

SIGNATURES = {
    "serving_default": {"image_bytes": types_pb2.DT_STRING},
    "predict_pixels": {"pixels": types_pb2.DT_UINT8},
}
PIXELS = np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3).tolist()
GOOD = [
    {"instances": [{"b64": "aGVsbG8="}]},
    {"signature_name": "predict_pixels", "instances": PIXELS},
    {"signature_name": "predict_pixels", "inputs": {"pixels": PIXELS}},
]
BAD = [
    b"{not json",
    b"[" * 5000,
    json.dumps({"signature_name": "predict_pixels", "instances": [PIXELS[0]] * 9}).encode(),  # over rows
    json.dumps({"signature_name": "nope", "instances": PIXELS}).encode(),
    json.dumps({"signature_name": "predict_pixels", "instances": [[[[256, 0, 0]]]]}).encode(),
    json.dumps({"instances": [{"b64": "not base64!"}]}).encode(),
    json.dumps({"instances": [1], "inputs": [1]}).encode(),
]


@pytest.fixture(scope="module")
def offloading():
    converter = BodyConverter(workers=1, min_body_bytes=1)  # every body goes to the worker
    yield converter
    converter.close()


def convert(converter: BodyConverter, body: bytes, signatures=SIGNATURES):
    return asyncio.run(converter.convert(body, 8, signatures))


def outcome(converter: BodyConverter, body: bytes) -> tuple[str, str] | tuple[bytes, bool]:
    try:
        request, row_format = convert(converter, body)
    except GatewayError as error:
        return type(error).__name__, error.message
    return request.SerializeToString(deterministic=True), row_format


@pytest.mark.parametrize("body", [json.dumps(body).encode() for body in GOOD] + BAD)
def test_a_worker_converts_a_body_exactly_as_the_event_loop_would(offloading, body):
    in_process = BodyConverter(workers=0, min_body_bytes=1)
    assert not in_process.offloads(body)
    assert offloading.offloads(body)
    assert outcome(offloading, body) == outcome(in_process, body)


def test_small_bodies_stay_in_process_and_big_ones_go_to_the_workers():
    converter = BodyConverter(workers=1, min_body_bytes=100)
    assert not converter.offloads(b"x" * 99)
    assert converter.offloads(b"x" * 100)


def test_a_valid_body_without_signatures_is_none_so_the_metadata_error_is_raised(offloading):
    assert convert(offloading, json.dumps(GOOD[1]).encode(), signatures=None) is None
    with pytest.raises(GatewayError, match="not valid JSON"):
        convert(offloading, b"{not json", signatures=None)


def test_the_worker_never_imports_tensorflow(offloading):
    convert(offloading, json.dumps(GOOD[1]).encode())  # the pool is running
    future = offloading._start().submit(eval, "sorted({'tensorflow', 'keras'} & set(__import__('sys').modules))")
    assert future.result(timeout=60) == []


def test_a_killed_worker_costs_no_request_and_the_pool_is_restarted():
    converter = BodyConverter(workers=1, min_body_bytes=1)
    body = json.dumps(GOOD[1]).encode()
    try:
        expected = outcome(converter, body)
        (pid,) = converter._start()._processes
        os.kill(pid, signal.SIGKILL)
        assert outcome(converter, body) == expected  # converted in-process while the pool is broken
        assert outcome(converter, body) == expected  # and by a new pool after that
    finally:
        converter.close()


def test_workers_that_cannot_start_switch_offloading_off(monkeypatch, caplog):
    # Every new worker exits at once, as under an unguarded entry script that spawn re-runs.
    monkeypatch.setattr(json_offload, "_prepare_worker", os._exit)
    converter = BodyConverter(workers=1, min_body_bytes=1)
    body = json.dumps(GOOD[1]).encode()
    try:
        assert outcome(converter, body) == outcome(BodyConverter(workers=0, min_body_bytes=1), body)
    finally:
        converter.close()
    assert not converter.offloads(body)
    assert "converting REST bodies in-process from now on" in caplog.text


def test_a_pool_that_cannot_be_created_switches_offloading_off(monkeypatch, caplog):
    def no_semaphores(*args, **kwargs):
        raise OSError(38, "Function not implemented")  # what SemLock says without /dev/shm

    monkeypatch.setattr(json_offload, "ProcessPoolExecutor", no_semaphores)
    converter = BodyConverter(workers=1, min_body_bytes=1)
    body = json.dumps(GOOD[1]).encode()
    assert outcome(converter, body) == outcome(BodyConverter(workers=0, min_body_bytes=1), body)
    assert not converter.offloads(body)
    assert "cannot start" in caplog.text


WORKER_OWNER = """
import asyncio, json, sys, time
from service.gateway.http.json_offload import BodyConverter
from tlserve.protocol import types_pb2
converter = BodyConverter(workers=1, min_body_bytes=1)
body = json.dumps({"instances": [[1, 2, 3]]}).encode()
asyncio.run(converter.convert(body, 8, {"serving_default": {"x": types_pb2.DT_UINT8}}))
print(*converter._start()._processes, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_sigkilled_gateway():
    owner = subprocess.Popen([sys.executable, "-c", WORKER_OWNER], stdout=subprocess.PIPE, text=True)
    try:
        worker_pid = int(owner.stdout.readline())
        assert Path(f"/proc/{worker_pid}").exists()
    finally:
        owner.kill()
        owner.wait(timeout=30)
        owner.stdout.close()
    # Bounds a hang only: the worker gets SIGTERM from the kernel the moment its parent is gone.
    deadline = time.monotonic() + 30
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphaned = _alive(worker_pid)
    if orphaned:
        os.kill(worker_pid, signal.SIGKILL)  # leave no orphan behind a failing test
    assert not orphaned, f"worker {worker_pid} outlived its gateway"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
