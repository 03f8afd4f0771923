"""Several upstream replicas: the gateway's upstream_lb_policy spreads Predict calls (round_robin) or not (pick_first).

Real wire: the full gateway (serve) → GrpcBackend → two in-process gRPC fakes named in one `ipv4:` target.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from pydantic import ValidationError
from tensorflow_serving.apis import prediction_service_pb2_grpc

from service.gateway.settings import MIB, Settings
from service.gateway.upstream.backend import GrpcBackend
from tests.conftest import random_images
from tests.service.gateway.fakes import FakeModelServer, start_fake_upstream
from tests.service.gateway.in_process import grpc_channel, running_gateway_to, tf_serving_request
from tlserve.cli import main


@contextlib.asynccontextmanager
async def two_replicas():
    """Two fake model servers on their own ports; yields the fakes and the `ipv4:` target naming both."""
    fakes = [FakeModelServer(), FakeModelServer()]
    started = [await start_fake_upstream(fake) for fake in fakes]
    try:
        yield fakes, "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port, _ in started)
    finally:
        for server, _, _ in started:
            await server.stop(None)


async def predict_until(stub, done, *, max_requests: int) -> int:
    """Send one-image Predicts one after another until `done()` or `max_requests`; returns how many were sent."""
    deadline = asyncio.get_running_loop().time() + 30
    sent = 0
    while sent < max_requests and not done() and asyncio.get_running_loop().time() < deadline:
        await stub.Predict(tf_serving_request(random_images(1, seed=sent)), timeout=30)
        sent += 1
    return sent


async def predicts_per_replica(lb_policy: str, done, *, max_requests: int) -> tuple[int, list[int]]:
    """A gateway over two fake replicas with `lb_policy`: (requests sent, Predicts each replica received)."""
    async with two_replicas() as (fakes, target):
        async with (
            running_gateway_to(target, upstream_lb_policy=lb_policy) as ports,
            grpc_channel(ports.grpc_port) as channel,
        ):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            sent = await predict_until(stub, lambda: done(fakes), max_requests=max_requests)
        return sent, [len(fake.predict_requests) for fake in fakes]


def test_round_robin_sends_predicts_to_every_replica():
    # round_robin uses a replica once its connection is READY: the first calls may all go to one
    # (bounded by predict_until's 30 s, not by a request count).
    every_replica_reached = lambda fakes: all(fake.predict_requests for fake in fakes)  # noqa: E731
    sent, counts = asyncio.run(predicts_per_replica("round_robin", every_replica_reached, max_requests=100_000))
    assert all(counts), f"predicts per replica after {sent} requests: {counts}"
    assert sum(counts) == sent


def test_pick_first_keeps_every_predict_on_one_replica():
    sent, counts = asyncio.run(predicts_per_replica("pick_first", lambda fakes: False, max_requests=20))
    assert sorted(counts) == [0, sent]
    assert sent == 20


def test_a_dns_target_reaches_the_model_server():
    async def scenario():
        fake = FakeModelServer()
        server, port, _ = await start_fake_upstream(fake)
        backend = GrpcBackend(f"dns:///127.0.0.1:{port}", max_message_bytes=64 * MIB, lb_policy="round_robin")
        try:
            response = await backend.predict(tf_serving_request(random_images(1)), timeout_s=30)
        finally:
            await backend.close()
            await server.stop(None)
        assert response.model_spec.version.value == 2
        assert len(fake.predict_requests) == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "upstream",
    [
        "tfserving:8500",
        "[::1]:8500",
        "dns:///tfserving-pods.tlserve.svc.cluster.local:8500",
        "ipv4:127.0.0.1:8600,127.0.0.1:8601",
        "ipv6:[::1]:8600,[::1]:8601",
    ],
)
def test_upstream_accepts_grpc_target_forms(upstream):
    assert Settings(upstream=upstream).upstream == upstream


@pytest.mark.parametrize(
    "upstream",
    ["tfserving", "dns:///tfserving", "ipv4:tfserving:8500", "ipv4:127.0.0.1:8600,", "host:0", "two words:1"],
)
def test_upstream_rejects_garbage(upstream):
    with pytest.raises(ValidationError, match="expected HOST:PORT, dns:///HOST:PORT or ipv4:ADDR:PORT"):
        Settings(upstream=upstream)


def test_serve_exits_2_with_one_line_for_a_bad_upstream(capsys, tmp_path):
    assert main(["serve", "--models-dir", str(tmp_path), "--upstream", "ipv4:tfserving:8500"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "tlserve: error: --upstream ipv4:tfserving:8500: value error, "
        "expected HOST:PORT, dns:///HOST:PORT or ipv4:ADDR:PORT[,ADDR:PORT...], got 'ipv4:tfserving:8500'"
    ]


def test_serve_exits_2_for_an_unknown_lb_policy(capsys, tmp_path):
    assert main(["serve", "--upstream", "127.0.0.1:9", "--upstream-lb-policy", "random"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "tlserve: error: --upstream-lb-policy random: input should be 'pick_first' or 'round_robin'"
    ]
