"""Promotion across two model server replicas end to end: a round_robin gateway, 8 clients, 3 promote/rollback cycles.

Two real `tlserve model-server` processes serve one repository; a real `tlserve serve` balances over both
(`ipv4:` address list, round_robin); labels move on both through a ReplicaGroup. Zero failed requests, every
settled answer comes from the version the move installed, and each replica served a share of the traffic
(read from its own Prometheus metrics, which the gateway cannot fake).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from promotion.promote import MoveOptions, move_label
from promotion.replicas import connect
from promotion.rollback import rollback
from tests.e2e.test_promotion import (
    SERVE_ENV,
    assert_pinned_answers_follow_the_moves,
    clients,
    pinned_answers_since,
    wait_until,
)
from tests.support.gateway import ServeProcess, running_serve
from tests.support.modelserver import ModelServerProcess
from tlserve import audit
from tlserve.processes import LOOPBACK, free_ports

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 8
CYCLES = 3
REPLICAS = 2
# Pinned answers that must have started after a move finished before the next move begins.
SETTLED_ANSWERS = 3
REPLICA_ENV = {**SERVE_ENV, "TLSERVE_UPSTREAM_LB_POLICY": "round_robin"}
LATENCY = ":tensorflow:serving:request_latency"
PREDICT_LABELS = {"model_name": "demo", "API": "predict", "entrypoint": "GRPC"}


class Replica(ModelServerProcess):
    """A model server process with its REST port on, to read its own label state and request counts."""

    def __init__(self, models_dir: Path, port: int, rest_port: int, log_path: Path) -> None:
        super().__init__(models_dir, port, log_path, extra_args=["--rest-api-port", str(rest_port)])
        self.rest_url = f"http://{LOOPBACK}:{rest_port}"

    def label_version(self, label: str = "stable") -> int:
        """The version `label` points at on this replica (TF Serving's REST status by label)."""
        response = httpx.get(f"{self.rest_url}/v1/models/demo/labels/{label}", timeout=30.0)
        assert response.status_code == 200, f"{self.target}: {response.status_code} {response.text}"
        return int(response.json()["model_version_status"][0]["version"])

    def predicts(self) -> float:
        """Predict calls this replica answered for `demo` (the count of its request latency histogram)."""
        text = httpx.get(f"{self.rest_url}/monitoring/prometheus/metrics", timeout=30.0).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == LATENCY
            for sample in family.samples
            if sample.name == f"{LATENCY}_count" and sample.labels == PREDICT_LABELS
        )


@pytest.fixture
def replicas(repo: Path, tmp_path: Path) -> Iterator[list[Replica]]:
    """REPLICAS model servers on the same repository, started side by side (each imports TensorFlow)."""
    ports = free_ports(2 * REPLICAS)
    servers = [
        Replica(repo, ports[2 * index], ports[2 * index + 1], tmp_path / f"model-server-{index}.log")
        for index in range(REPLICAS)
    ]
    try:
        with ThreadPoolExecutor(REPLICAS) as pool:
            list(pool.map(lambda server: server.start(), servers))
        yield servers
    finally:
        for server in servers:
            server.stop()


@contextlib.contextmanager
def round_robin_gateway(replicas: list[Replica], log_path: Path) -> Iterator[ServeProcess]:
    upstream = "ipv4:" + ",".join(replica.target for replica in replicas)
    with running_serve(upstream=upstream, env=REPLICA_ENV, log_path=log_path) as gateway:
        yield gateway


def test_round_robin_gateway_sees_no_failure_while_stable_moves_on_two_replicas_three_times(
    repo: Path, replicas: list[Replica], tmp_path: Path
) -> None:
    with round_robin_gateway(replicas, tmp_path / "serve.log") as gateway:

        def logs() -> str:
            return "\n".join([gateway.log_tail(), *(replica.log_tail() for replica in replicas)])

        moves: list[tuple[float, float, int]] = []  # (move started, move finished, stable version from then on)
        labels_after_moves: list[list[int]] = []  # stable's version on each replica, read right after each move

        def settle(started: float, version: int) -> None:
            """Note the move, read stable on each replica, then wait for SETTLED_ANSWERS pinned answers after it."""
            moves.append((started, time.monotonic(), version))
            labels_after_moves.append([replica.label_version() for replica in replicas])
            wait_until(
                lambda: pinned_answers_since(answers, moves[-1][1]) >= SETTLED_ANSWERS,
                f"{SETTLED_ANSWERS} pinned answers after move {len(moves) - 1}",
                logs,
            )

        with clients(gateway.http_url, CLIENTS) as answers:
            with connect([replica.target for replica in replicas]) as group:
                options = MoveOptions(server=group, drain_s=0.25, load_timeout_s=180)
                for _cycle in range(CYCLES):
                    started = time.monotonic()
                    move_label(repo, "demo", 2, options=options, reason="e2e promote on replicas")
                    settle(started, 2)
                    started = time.monotonic()
                    rollback(repo, "demo", options=options, reason="e2e rollback on replicas")
                    settle(started, 1)
            wait_until(lambda: len(answers) > CLIENTS * 10, f"more than {CLIENTS * 10} answers", logs)
        log_tail = logs()
        predicts = [replica.predicts() for replica in replicas]
        final_labels = [replica.label_version() for replica in replicas]

    failures = [answer for answer in answers if answer.status != 200]
    assert not failures, f"{len(failures)} of {len(answers)} failed, e.g. {failures[:3]}\n{log_tail}"
    # Each move reached every replica before it returned, and the last one (a rollback) left stable on 1 everywhere.
    assert labels_after_moves == [[version] * REPLICAS for _s, _f, version in moves]
    assert final_labels == [1] * REPLICAS
    assert_pinned_answers_follow_the_moves(answers, moves)
    # round_robin spreads requests over both replicas (pick_first would send every one to the first); a quarter
    # each leaves room for the moments a replica's connection was not yet ready. (The gateway batches concurrent
    # requests, so there are fewer predicts than answers.)
    assert min(predicts) > 0, f"predicts per replica: {predicts}"
    assert all(count >= sum(predicts) / 4 for count in predicts), f"predicts per replica: {predicts}"
    records = audit.read_records(repo, "demo")
    assert [record.action for record in records] == ["promote", "rollback"] * CYCLES
