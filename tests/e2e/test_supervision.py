"""`tlserve serve` supervises its embedded model server: a killed child is restarted while the gateway stays up
and answers 503 at once, a crash loop ends the process with one line, and the child listens on loopback only."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from tests.conftest import random_images
from tests.e2e.conftest import GATEWAY_ENV, MODEL_NAME
from tests.support.gateway import ServeProcess, running_serve
from tests.support.modelserver import predict_request
from tlserve.processes import free_ports

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the child process"),
]
WAIT_BOUND_S = 60.0  # bounds a hang; measures nothing
# The deadline a request would wait for if the gateway did not know its model server is down.
FAIL_FAST_BOUND_S = 2.0
MAX_LOAD_REQUESTS = 2000  # per client


def model_server_pid(serving: ServeProcess) -> int:
    # A restarted child is a child of the supervisor's thread: look at every thread's children.
    tasks = Path(f"/proc/{serving.process.pid}/task").iterdir()
    (child,) = {int(part) for task in tasks for part in (task / "children").read_text().split()}
    return child


def post_image(serving: ServeProcess, image: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    files = {"files": ("image.png", image, "image/png")}
    return httpx.post(f"{serving.http_url}/predict", files=files, headers=headers, timeout=90.0)


def wait_for_status(url: str, status: int) -> None:
    deadline = time.monotonic() + WAIT_BOUND_S
    while httpx.get(url, timeout=10.0).status_code != status:
        assert time.monotonic() < deadline, f"{url} never answered {status}"
        time.sleep(0.02)


class LoadDuringKill:
    """Clients sending /predict back to back across the kill and the restart (bounded in count and time)."""

    def __init__(self, serving: ServeProcess, image: bytes, clients: int = 4) -> None:
        self.codes: list[int | str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(serving, image), daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self, serving: ServeProcess, image: bytes) -> None:
        deadline = time.monotonic() + 2 * WAIT_BOUND_S
        for _request in range(MAX_LOAD_REQUESTS):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                self.codes.append(post_image(serving, image).status_code)
            except httpx.TransportError as exc:
                self.codes.append(type(exc).__name__)
            time.sleep(0.01)

    def stop(self) -> list[int | str]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        return self.codes


def test_a_killed_model_server_is_restarted_while_the_gateway_answers_503_fast(model_repo, tmp_path):
    image = random_images(1)[0]
    # The restart waits 3 s, then imports TensorFlow: a wide window in which the child is down.
    env = {**GATEWAY_ENV, "TLSERVE_MODEL_SERVER_RESTART_BACKOFF_S": "3"}
    with running_serve(model_repo(), env=env, log_path=tmp_path / "serve.log") as serving:
        assert post_image(serving, image).status_code == 200
        load = LoadDuringKill(serving, image)
        first = model_server_pid(serving)
        os.kill(first, signal.SIGKILL)
        wait_for_status(serving.http_url + "/readyz", 503)

        started = time.monotonic()
        response = post_image(serving, image)
        http_elapsed = time.monotonic() - started
        with grpc.insecure_channel(serving.grpc_target) as channel:
            predict = channel.unary_unary(
                "/tensorflow.serving.PredictionService/Predict",
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=lambda data: data,
            )
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as grpc_error:
                predict(predict_request([image], model=MODEL_NAME), timeout=60.0)
            grpc_elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "backend_unavailable"
        assert http_elapsed < FAIL_FAST_BOUND_S, "the HTTP request waited for its deadline"
        assert grpc_error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert grpc_elapsed < FAIL_FAST_BOUND_S, "the gRPC request waited for its deadline"
        assert "tlserve_model_server_up 0.0" in serving.metrics_text()

        serving.wait_ready()  # back by itself
        assert serving.process.poll() is None
        codes = load.stop()
        # Under load, every request got an answer: 200 before the kill and after the restart, 503 in between.
        assert set(codes) <= {200, 503}, sorted(set(map(str, codes)))
        assert 503 in codes
        assert model_server_pid(serving) != first
        assert post_image(serving, image).status_code == 200
        metrics = serving.metrics_text()
        assert "tlserve_model_server_restarts_total 1.0" in metrics
        assert "tlserve_model_server_up 1.0" in metrics


def test_serve_gives_up_with_one_line_when_the_restart_budget_is_spent(model_repo, tmp_path):
    args = ["--model-server-max-restarts", "0"]
    with running_serve(model_repo(), extra_args=args, log_path=tmp_path / "serve.log") as serving:
        os.kill(model_server_pid(serving), signal.SIGKILL)
        assert serving.process.wait(WAIT_BOUND_S) == 2
    assert serving.log_tail().splitlines()[-1] == (
        "tlserve: error: the embedded model server exited with code -9, exit 1 within 300s (restart budget 0); "
        "giving up"
    )


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket `pid` listens on, from /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                found.add(_decode(local, family))
    return found


def _decode(local: str, family: int) -> tuple[str, int]:
    address_hex, port_hex = local.split(":")
    raw = bytes.fromhex(address_hex)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[index : index + 4][::-1] for index in range(0, len(raw), 4))
    return socket.inet_ntop(family, words), int(port_hex, 16)


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in {"::1"} or address.startswith("::ffff:127.")


def machine_addresses() -> list[str]:
    """This machine's own non-loopback addresses (what another host would connect to)."""
    addresses = set()
    for info in socket.getaddrinfo(socket.gethostname(), None):
        addresses.add(str(info[4][0]))
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface's address
        addresses.add(probe.getsockname()[0])
    return sorted(address for address in addresses if not is_loopback(address) and not address.startswith("fe80"))


def connection_refused(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(5.0)
        try:
            client.connect((address, port))
        except ConnectionRefusedError:
            return True
        return False


def test_the_embedded_model_server_listens_on_loopback_only_even_if_the_environment_says_otherwise(
    model_repo, tmp_path
):
    (rest_port,) = free_ports(1)
    env = {
        **GATEWAY_ENV,
        "TLSERVE_MODEL_SERVER_HOST": "0.0.0.0",
        "TLSERVE_MODEL_SERVER_REST_API_PORT": str(rest_port),
    }
    args = ["--api-keys", "k1"]
    with running_serve(model_repo(), env=env, extra_args=args, log_path=tmp_path / "serve.log") as serving:
        listening = listening_addresses(model_server_pid(serving))
        assert {port for _, port in listening} == {serving.model_server_port, rest_port}
        assert all(is_loopback(address) for address, _ in listening), listening
        for address in machine_addresses():
            for port in (serving.model_server_port, rest_port):
                assert connection_refused(address, port), f"{address}:{port} accepted a connection"
        # What the gateway exposes to other hosts needs the key: status, metadata, predictions and metrics (they
        # name the models); /readyz still answers probes, with its status only.
        assert post_image(serving, random_images(1)[0]).status_code == 401
        assert httpx.get(f"{serving.http_url}/v1/models/{MODEL_NAME}", timeout=10.0).status_code == 401
        assert httpx.get(f"{serving.http_url}/v1/models/{MODEL_NAME}/metadata", timeout=10.0).status_code == 401
        assert httpx.get(f"{serving.http_url}/metrics", timeout=10.0).status_code == 401
        scraped = httpx.get(f"{serving.http_url}/metrics", headers={"Authorization": "Bearer k1"}, timeout=10.0)
        assert scraped.status_code == 200
        assert "tlserve_model_server_up 1.0" in scraped.text
        ready = httpx.get(f"{serving.http_url}/readyz", timeout=10.0)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        with grpc.insecure_channel(serving.grpc_target) as channel:
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = MODEL_NAME
            with pytest.raises(grpc.RpcError) as error:
                status(request, timeout=30.0)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
