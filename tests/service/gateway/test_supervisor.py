"""The embedded model server's supervisor, with small real child processes standing in for `tlserve model-server`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.gateway.errors import BackendUnavailable
from service.gateway.model_server_child import LOOPBACK, model_server_command, spawn_child
from service.gateway.supervisor import FailFastBackend, ModelServerState, ModelServerSupervisor, RestartPolicy

WAIT_BOUND_S = 20.0  # bounds a hang on a busy machine; measures nothing
# Says "listening" like the model server, then runs until killed.
LISTENS_FOREVER = "import time; print('model server listening on 127.0.0.1:1', flush=True); time.sleep(300)"
# Says "listening", then crashes with exit code 3 shortly after.
CRASHES_SOON = (
    "import sys, time; print('model server listening on 127.0.0.1:1', flush=True); time.sleep(0.2); sys.exit(3)"
)


def fake_spawn(code: str):
    return lambda: spawn_child([sys.executable, "-c", code])


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_BOUND_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def current_pid(supervisor: ModelServerSupervisor) -> int:
    assert supervisor._child is not None
    return supervisor._child.process.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_restart_policy_doubles_the_delay_per_crash_up_to_its_cap():
    policy = RestartPolicy(backoff_s=0.5, max_backoff_s=2.0)
    assert [policy.delay_s(crashes) for crashes in range(1, 6)] == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_a_killed_child_is_restarted_counted_and_marked_up_again():
    gave_up: list[bool] = []
    supervisor = ModelServerSupervisor(
        fake_spawn(LISTENS_FOREVER), RestartPolicy(backoff_s=0.3), on_give_up=lambda: gave_up.append(True)
    )
    supervisor.start()
    try:
        first = current_pid(supervisor)
        assert supervisor.state.up
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not supervisor.state.up, "the state never went down after the kill")
        wait_for(lambda: supervisor.state.up, "the child was not restarted")
        assert supervisor.state.restarts == 1
        assert current_pid(supervisor) != first
        assert alive(current_pid(supervisor))
        assert not gave_up
        assert supervisor.gave_up is None
    finally:
        supervisor.stop()
    assert not alive(current_pid(supervisor))


def test_a_crash_loop_gives_up_after_the_budget_with_one_reason():
    gave_up: list[bool] = []
    policy = RestartPolicy(max_restarts=2, window_s=60, backoff_s=0.01)
    supervisor = ModelServerSupervisor(fake_spawn(CRASHES_SOON), policy, on_give_up=lambda: gave_up.append(True))
    supervisor.start()
    try:
        wait_for(lambda: supervisor.gave_up is not None, "the supervisor never gave up")
    finally:
        supervisor.stop()
    assert gave_up == [True]
    assert supervisor.state.restarts == 2
    assert not supervisor.state.up
    assert supervisor.gave_up == (
        "the embedded model server exited with code 3, exit 3 within 60s (restart budget 2); giving up"
    )


def test_crashes_older_than_the_window_do_not_count():
    policy = RestartPolicy(max_restarts=1, window_s=0.1, backoff_s=0.01)
    supervisor = ModelServerSupervisor(fake_spawn(CRASHES_SOON), policy, on_give_up=lambda: None)
    supervisor.start()
    try:
        wait_for(lambda: supervisor.state.restarts >= 3, "the child was not restarted three times")
        assert supervisor.gave_up is None
    finally:
        supervisor.stop()


def test_stop_during_the_restart_backoff_leaves_no_child():
    policy = RestartPolicy(backoff_s=5.0)
    supervisor = ModelServerSupervisor(fake_spawn(LISTENS_FOREVER), policy, on_give_up=lambda: None)
    supervisor.start()
    first = current_pid(supervisor)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not supervisor.state.up, "the state never went down after the kill")
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 4.0, "stop() waited for the restart backoff"
    assert current_pid(supervisor) == first
    assert supervisor.state.restarts == 0


def test_state_is_exported_as_up_gauge_and_restart_counter():
    state = ModelServerState()
    registry = CollectorRegistry()
    registry.register(state)
    state.mark_up()
    state.count_restart()
    text = generate_latest(registry).decode()
    assert "tlserve_model_server_up 1.0" in text
    assert "tlserve_model_server_restarts_total 1.0" in text
    state.mark_down()
    assert "tlserve_model_server_up 0.0" in generate_latest(registry).decode()


class RecordingBackend:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def predict(self, request, timeout_s):
        self.calls.append("predict")
        return "answer"

    async def get_model_metadata(self, request, timeout_s):
        self.calls.append("metadata")
        return "answer"

    async def get_model_status(self, request, timeout_s):
        self.calls.append("status")
        return "answer"

    async def close(self) -> None:
        self.calls.append("close")


def test_fail_fast_backend_refuses_every_call_without_going_upstream_while_down():
    inner, state = RecordingBackend(), ModelServerState()
    backend = FailFastBackend(inner, state)

    async def calls() -> None:
        for method in (backend.predict, backend.get_model_metadata, backend.get_model_status):
            with pytest.raises(BackendUnavailable, match="restarting"):
                await method(object(), 60.0)

    asyncio.run(calls())
    assert inner.calls == []


def test_fail_fast_backend_delegates_while_up():
    inner, state = RecordingBackend(), ModelServerState()
    state.mark_up()
    backend = FailFastBackend(inner, state)

    async def calls() -> list[str]:
        return [
            await backend.predict(object(), 1.0),
            await backend.get_model_metadata(object(), 1.0),
            await backend.get_model_status(object(), 1.0),
        ]

    assert asyncio.run(calls()) == ["answer"] * 3
    assert inner.calls == ["predict", "metadata", "status"]


def test_the_embedded_model_server_command_binds_loopback_only():
    command = model_server_command(Path("models"), 8600)
    assert command[command.index("--host") + 1] == LOOPBACK == "127.0.0.1"


def test_the_embedded_model_server_command_carries_the_gateways_pixel_budget():
    command = model_server_command(Path("models"), 8600, max_request_pixels=5000)
    assert command[command.index("--max-request-pixels") + 1] == "5000"


def test_grpc_backend_stops_retrying_once_the_supervisor_knows_the_server_is_down():
    import grpc
    import grpc.aio

    from service.gateway.upstream.backend import GrpcBackend
    from tests.conftest import random_images
    from tests.service.gateway.fakes import FakeModelServer, rpc_error, start_fake_upstream
    from tests.service.gateway.in_process import tf_serving_request

    fake = FakeModelServer()
    fake.fail_next = [rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")] * 5

    async def scenario() -> None:
        upstream, port, _ = await start_fake_upstream(fake)
        backend = GrpcBackend(
            f"127.0.0.1:{port}", max_message_bytes=1 << 20, retries=5, retry_backoff_s=0.01, is_available=lambda: False
        )
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await backend.predict(tf_serving_request(random_images(1)), 30.0)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await backend.close()
            await upstream.stop(None)

    asyncio.run(scenario())
    assert len(fake.predict_requests) == 1  # 6 attempts without the supervisor's word
