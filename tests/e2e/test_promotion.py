"""Promotion end to end: real `tlserve serve` (gateway + embedded model server), 16 clients, 5 promote/rollback cycles.

Zero failed requests while labels move, and every answer to `label=stable` that started after a move
finished comes from the version the move installed.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from promotion.client import ModelServerClient
from promotion.promote import MoveOptions, move_label
from promotion.rollback import rollback
from tests.conftest import random_images
from tests.support.gateway import running_serve
from tlserve import audit, models_config, processes
from tlserve.models_config import ServedModel

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 16
CYCLES = 5
# Pinned answers that must have started after a move finished before the next move begins.
SETTLED_ANSWERS = 3
# Bounds for the waits below (poll, not sleep): a VGG16 round trip on 2 busy cores can take seconds.
WAIT_TIMEOUT_S = 60.0
POLL_S = 0.05
# The gateway's deadline: generous, so a failed request means a label move broke it, not a slow machine.
SERVE_ENV = {"TLSERVE_REQUEST_TIMEOUT_S": "60"}
BODY = {"instances": [{"b64": base64.b64encode(image).decode()} for image in random_images(1, seed=11)]}


@dataclass(frozen=True)
class Answer:
    started: float
    finished: float
    status: int
    version: int | None
    pinned: bool
    error: str = ""


def client_loop(url: str, pinned: bool, stop: threading.Event, answers: list[Answer]) -> None:
    params = {"label": "stable"} if pinned else {}
    with httpx.Client(timeout=float(SERVE_ENV["TLSERVE_REQUEST_TIMEOUT_S"]) + 30.0) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = client.post(f"{url}/predict", params=params, json=BODY)
                version = response.json().get("version") if response.status_code == 200 else None
                answers.append(Answer(started, time.monotonic(), response.status_code, version, pinned,
                                      "" if response.status_code == 200 else response.text[:200]))  # fmt: skip
            except httpx.HTTPError as exc:
                answers.append(Answer(started, time.monotonic(), 0, None, pinned, repr(exc)))


def wait_until(condition: Callable[[], bool], what: str, log_tail: Callable[[], str]) -> None:
    """Poll `condition` every POLL_S until true; fail after WAIT_TIMEOUT_S with `what` and the serve log."""
    processes.wait_until(condition, timeout_s=WAIT_TIMEOUT_S, what=what, interval_s=POLL_S, details=log_tail)


def pinned_answers_since(answers: list[Answer], since: float) -> int:
    return sum(1 for answer in list(answers) if answer.pinned and answer.started > since)


@contextlib.contextmanager
def clients(url: str, count: int) -> Iterator[list[Answer]]:
    """`count` client threads predicting through `url` (every other one pinned to stable) until the block ends."""
    answers: list[Answer] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(url, index % 2 == 0, stop, answers), daemon=True)
        for index in range(count)
    ]
    for thread in threads:
        thread.start()
    try:
        yield answers
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def assert_pinned_answers_follow_the_moves(answers: list[Answer], moves: list[tuple[float, float, int]]) -> None:
    """Every pinned answer sent after a move finished and back before the next began comes from that move's version."""
    for index, (_started, finished, version) in enumerate(moves):
        next_started = moves[index + 1][0] if index + 1 < len(moves) else float("inf")
        settled = [a for a in answers if a.pinned and finished < a.started and a.finished < next_started]
        wrong = [a for a in settled if a.version != version]
        assert settled, f"no pinned answer between move {index} and the next"
        assert not wrong, f"move {index} to {version}: {len(wrong)} of {len(settled)} from another version: {wrong[:3]}"


def test_sixteen_clients_see_no_failure_while_stable_is_promoted_and_rolled_back_five_times(
    repo: Path, tmp_path: Path
) -> None:
    with (
        running_serve(repo, env=SERVE_ENV, log_path=tmp_path / "serve.log") as gateway,
        clients(gateway.http_url, CLIENTS) as answers,
    ):
        moves: list[tuple[float, float, int]] = []  # (move started, move finished, stable version from then on)

        def settle() -> None:
            """Let SETTLED_ANSWERS pinned answers that started after the last move finish before the next move."""
            finished = moves[-1][1]
            wait_until(
                lambda: pinned_answers_since(answers, finished) >= SETTLED_ANSWERS,
                f"{SETTLED_ANSWERS} pinned answers after move {len(moves) - 1}",
                gateway.log_tail,
            )

        with ModelServerClient(gateway.model_server_target) as client:
            options = MoveOptions(server=client, drain_s=0.25, load_timeout_s=180)
            for _cycle in range(CYCLES):
                started = time.monotonic()
                move_label(repo, "demo", 2, options=options, reason="e2e promote")
                moves.append((started, time.monotonic(), 2))
                settle()
                started = time.monotonic()
                rollback(repo, "demo", options=options, reason="e2e rollback")
                moves.append((started, time.monotonic(), 1))
                settle()
        # Enough traffic overall that "zero failures" covers many requests, not a handful.
        wait_until(lambda: len(answers) > CLIENTS * 10, f"more than {CLIENTS * 10} answers", gateway.log_tail)
        log_tail = gateway.log_tail()

    failures = [answer for answer in answers if answer.status != 200]
    assert not failures, f"{len(failures)} of {len(answers)} failed, e.g. {failures[:3]}\n{log_tail}"
    assert len(answers) > CLIENTS * 10
    assert_pinned_answers_follow_the_moves(answers, moves)
    assert {answer.version for answer in answers if not answer.pinned} <= {1, 2}
    records = audit.read_records(repo, "demo")
    assert [record.action for record in records] == ["promote", "rollback"] * CYCLES


def upstream_predicts(metrics: str) -> dict[tuple[str, str], float]:
    """tlserve_upstream_predicts_total as {(label, code): count}."""
    return {
        (sample.labels["label"], sample.labels["code"]): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "tlserve_upstream_predicts_total"
    }


def test_canary_share_sends_part_of_unpinned_traffic_to_the_canary_and_never_pinned_traffic(
    model_repo, tmp_path: Path
) -> None:
    # As after `tlserve retrain`: stable is version 1, the candidate (canary) is the newer version 2, which is also
    # the server's latest. Unpinned requests that the share does not pick must get stable's version, not latest.
    repo = model_repo("demo", versions=(1, 2))
    models_config.save_model(repo, ServedModel("demo", "demo", (1,), {"stable": 1}))
    env = {**SERVE_ENV, "TLSERVE_CANARY_SHARE": "0.5"}
    with running_serve(repo, env=env, log_path=tmp_path / "serve.log") as gateway:
        with ModelServerClient(gateway.model_server_target) as client:
            move_label(repo, "demo", 2, label="canary", options=MoveOptions(server=client, drain_s=0))
        with httpx.Client(timeout=float(SERVE_ENV["TLSERVE_REQUEST_TIMEOUT_S"]) + 30.0) as http:
            unpinned = [http.post(f"{gateway.http_url}/predict", json=BODY) for _ in range(40)]
            stable = {"label": "stable"}
            pinned = [http.post(f"{gateway.http_url}/predict", params=stable, json=BODY) for _ in range(20)]
        metrics = gateway.metrics_text()

    assert all(response.status_code == 200 for response in unpinned + pinned)
    unpinned_versions = [response.json()["version"] for response in unpinned]
    # With a share of 0.5, 40 requests all landing on one side has probability 2 * 0.5**40.
    assert set(unpinned_versions) == {1, 2}
    assert {response.json()["version"] for response in pinned} == {1}
    # Each unpinned request went to a label: the canary share to `canary` (version 2), the rest to `stable`
    # (version 1); none went unlabelled to the server's latest.
    counts = upstream_predicts(metrics)
    assert counts.get(("canary", "OK")) == unpinned_versions.count(2)
    assert counts.get(("stable", "OK")) == unpinned_versions.count(1) + len(pinned)
    assert ("", "OK") not in counts
