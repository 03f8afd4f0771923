"""Label moves across several model server replicas: `--server a,b`, `--all-replicas`, partial failures, merged state.

The replicas are real embedded model servers (in-process, real gRPC) on one models/ directory; none of them
re-reads models.config on its own, so only a reload sent to each replica moves its label.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from promotion import replicas
from promotion.client import ModelServerClient, ServerError
from promotion.promote import MoveOptions, drop_label, move_label
from tests.conftest import random_images
from tests.promotion.promote_fakes import FakeModelService
from tests.promotion.replica_fakes import Refusing, fake_getaddrinfo, fake_group
from tests.support.modelserver import free_port, predict_request, running_model_server
from tlserve import audit, models_config
from tlserve.cli import main
from tlserve.console import CommandError
from tlserve.models_config import ServedModel

IMAGES = random_images(1, seed=7)
WAIT_TIMEOUT_S = 60.0
MOVE_FLAGS = ("--drain", "0.5", "--load-timeout", "120")


@pytest.fixture
def repo(model_repo) -> Path:
    models_dir = model_repo("demo", versions=(1, 2, 3))
    models_config.save_model(models_dir, ServedModel("demo", "demo", (1,), {"stable": 1}))
    return models_dir


def stable_version(server) -> int:
    """The version that answers a Predict pinned to label stable on this replica."""
    response = server.prediction_stub().Predict(predict_request(IMAGES, "demo", version_label="stable"), timeout=30)
    return int(response.model_spec.version.value)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_promote_with_a_server_list_moves_stable_on_every_replica(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_model_server(repo) as first, running_model_server(repo) as second:
        servers = f"{first.target},{second.target}"
        code, out, err = run(capsys, "promote", "demo", "2", "--models-dir", str(repo), "--server", servers,
                             *MOVE_FLAGS)  # fmt: skip

        assert code == 0, err
        assert out.strip() == "demo: stable 1 -> 2"
        assert (stable_version(first), stable_version(second)) == (2, 2)
        for replica in (first, second):  # step 3 reached both: the old version is unloaded everywhere
            with ModelServerClient(replica.target) as client:
                assert client.version_states("demo").get(1) != "AVAILABLE"
        [record] = audit.read_records(repo)
        assert record.servers == (first.target, second.target)  # the audit log says where the move went


@dataclass(frozen=True)
class Answer:
    replica: int
    started: float
    finished: float
    version: int | None
    error: str = ""


@dataclass(frozen=True)
class Moved:
    started: float
    finished: float
    version: int


def predict_loop(servers: list, stop: threading.Event, answers: list[Answer]) -> None:
    """Alternate pinned (label=stable) Predicts between the replicas until stopped; record every outcome."""
    stubs = [server.prediction_stub() for server in servers]
    request = predict_request(IMAGES, "demo", version_label="stable")
    turn = 0
    while not stop.is_set():
        replica = turn % len(stubs)
        turn += 1
        started = time.monotonic()
        try:
            version = int(stubs[replica].Predict(request, timeout=60).model_spec.version.value)
            answers.append(Answer(replica, started, time.monotonic(), version))
        except Exception as exc:  # any failure is the finding: recorded and asserted on below
            answers.append(Answer(replica, started, time.monotonic(), None, str(exc)[:200]))


def wait_for_answers_after(answers: list[Answer], since: float, replica_count: int) -> None:
    """Until every replica answered two requests that started after `since` (bounded)."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        counts = [sum(1 for a in list(answers) if a.replica == r and a.started > since) for r in range(replica_count)]
        if min(counts) >= 2:
            return
        time.sleep(0.05)
    raise TimeoutError(f"replicas did not answer within {WAIT_TIMEOUT_S:.0f} s after a move")


@pytest.mark.slow
def test_moves_across_replicas_fail_no_request_and_switch_every_replicas_answers(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = [("promote", "2", 2), ("rollback", None, 1), ("promote", "3", 3), ("rollback", None, 1)]
    answers: list[Answer] = []
    moves: list[Moved] = []
    stop = threading.Event()
    with running_model_server(repo) as first, running_model_server(repo) as second:
        common = ["--models-dir", str(repo), "--server", f"{first.target},{second.target}", *MOVE_FLAGS]
        loop = threading.Thread(target=predict_loop, args=([first, second], stop, answers), daemon=True)
        loop.start()
        try:
            wait_for_answers_after(answers, 0.0, 2)
            for command, version, expected in plan:
                started = time.monotonic()
                code, _, err = run(capsys, command, "demo", *([version] if version else []), *common)
                assert code == 0, err
                moves.append(Moved(started, time.monotonic(), expected))
                wait_for_answers_after(answers, moves[-1].finished, 2)
        finally:
            stop.set()
            loop.join(timeout=120)

    assert [a.error for a in answers if a.error] == []
    next_starts = [move.started for move in moves[1:]] + [float("inf")]
    for move, next_start in zip(moves, next_starts, strict=True):
        # Every request sent between two moves, to either replica, is answered by the version the move installed.
        between = [a for a in answers if move.finished < a.started and a.finished < next_start]
        assert {a.replica for a in between} == {0, 1}
        assert {a.version for a in between} == {move.version}


@pytest.mark.slow
def test_an_unreachable_replica_fails_the_promote_by_name_and_the_others_keep_the_old_stable(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nobody listens there: the connection is refused
    with running_model_server(repo) as alive:
        code, _, err = run(capsys, "promote", "demo", "2", "--models-dir", str(repo), "--server",
                           f"{alive.target},{dead}", *MOVE_FLAGS)  # fmt: skip

        assert code == 2
        # The one-line error (tlserve's stderr; the log records go to pytest's log capture, not here).
        [line] = err.strip().splitlines()
        assert line.startswith(f"tlserve: error: reload config on model server {dead} failed: UNAVAILABLE")
        # Honest about the set-back: the live replica took step 1 and was put back; the dead one could not be.
        assert line.endswith(f"(set back to the previous config on every replica but {dead}; see the log)")
        assert stable_version(alive) == 1
        with ModelServerClient(alive.target) as client:  # step 1 was undone there: 2 is loaded no more
            deadline = time.monotonic() + WAIT_TIMEOUT_S
            while client.version_states("demo").get(2) == "AVAILABLE" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.version_states("demo").get(2) != "AVAILABLE"
    assert models_config.load_model(repo, "demo") == ServedModel("demo", "demo", (1,), {"stable": 1})
    assert audit.read_records(repo) == []


def test_a_replica_refusing_the_label_step_puts_the_replicas_that_moved_back_to_step_one(repo: Path) -> None:
    moved, refusing = FakeModelService(repo), Refusing(repo)
    with fake_group(repo, moved, refusing) as (group, targets):
        # The refusing replica refuses the set-back too: the error names it as the one not set back.
        expected = (
            f"model server {targets[1]} rejected the config: disk full "
            f"(set back to the previous config on every replica but {targets[1]}; see the log)"
        )
        with pytest.raises(ServerError) as raised:
            move_label(repo, "demo", 2, options=MoveOptions(server=group, drain_s=0))
        assert str(raised.value) == expected

    step_one = ServedModel("demo", "demo", (1, 2), {"stable": 1})
    assert models_config.get_model(moved.accepted[-1], "demo").labels == {"stable": 1}  # set back from stable 2
    assert models_config.get_model(moved.accepted[-2], "demo").labels == {"stable": 2}
    assert models_config.load_model(repo, "demo") == step_one
    assert audit.read_records(repo) == []


def test_all_replicas_resolves_every_address_brackets_ipv6_and_drops_duplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = {
        "tfserving-pods": [(socket.AF_INET, "10.0.0.5"), (socket.AF_INET, "10.0.0.6"), (socket.AF_INET, "10.0.0.5")],
        "v6-pods": [(socket.AF_INET6, "fd00::7")],
    }
    monkeypatch.setattr(replicas.socket, "getaddrinfo", fake_getaddrinfo(table))

    assert replicas.replica_targets("tfserving-pods:8500", all_replicas=True) == ["10.0.0.5:8500", "10.0.0.6:8500"]
    assert replicas.replica_targets("v6-pods:8500,tfserving-pods:8500", all_replicas=True) == [
        "[fd00::7]:8500", "10.0.0.5:8500", "10.0.0.6:8500"]  # fmt: skip
    assert replicas.replica_targets("tfserving-pods:8500") == ["tfserving-pods:8500"]  # without the flag: as given
    with pytest.raises(CommandError, match="cannot resolve nowhere"):
        replicas.replica_targets("nowhere:8500", all_replicas=True)
    monkeypatch.setitem(table, "empty", [])
    with pytest.raises(CommandError, match="empty has no addresses"):
        replicas.replica_targets("empty:8500", all_replicas=True)


def test_server_lists_and_the_all_replicas_environment_reach_the_commands(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicas.socket, "getaddrinfo", fake_getaddrinfo({}))
    monkeypatch.setenv("TLSERVE_ALL_REPLICAS", "yes")
    code, _, err = run(capsys, "promote", "demo", "2", "--models-dir", str(repo), "--server", "tfserving-pods:8500")
    assert code == 2
    assert (
        err.strip()
        == "tlserve: error: --all-replicas: cannot resolve tfserving-pods: [Errno -2] Name or service not known"
    )

    monkeypatch.delenv("TLSERVE_ALL_REPLICAS")
    code, _, err = run(capsys, "rollback", "demo", "--models-dir", str(repo), "--server", "a:1,,b:2")
    assert (code, len(err.strip().splitlines())) == (2, 1)
    assert "empty address" in err
    assert replicas.parse_servers("a:1, b:2,a:1") == ["a:1", "b:2"]
    with pytest.raises(CommandError, match=r"^--server expected HOST:PORT, got 'a'$"):
        replicas.replica_targets("a", all_replicas=True)


def test_merged_state_is_available_only_where_every_replica_has_it_available() -> None:
    merged = replicas.merge_states([{1: "AVAILABLE", 2: "AVAILABLE", 3: "LOADING"}, {1: "AVAILABLE", 2: "LOADING"}])
    assert merged == {1: "AVAILABLE", 2: "LOADING"}  # 3 is not loaded on the second replica at all
    assert replicas.merge_states([{4: "AVAILABLE"}, {4: "END"}]) == {4: "END"}


@pytest.mark.slow
def test_models_show_with_two_servers_reports_the_merged_state(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_model_server(repo) as first, running_model_server(repo) as second:
        loading_two = models_config.put_model(models_config.read_config(repo / "models.config"),
                                            ServedModel("demo", "demo", (1, 2), {"stable": 1}))  # fmt: skip
        with ModelServerClient(first.target) as client:  # only the first replica loads version 2
            client.reload(models_config.absolute_config(loading_two, repo))
            client.wait_available("demo", 2, timeout_s=WAIT_TIMEOUT_S)
        code, out, err = run(capsys, "models", "show", "demo", "--models-dir", str(repo), "--json",
                             "--server", f"{first.target},{second.target}")  # fmt: skip

    assert code == 0, err
    states = {row["version"]: (row["state"], row["replica_states"]) for row in json.loads(out)["versions"]}
    assert states[1] == ("AVAILABLE", {first.target: "AVAILABLE", second.target: "AVAILABLE"})
    assert states[2] == ("not loaded", {first.target: "AVAILABLE", second.target: "not loaded"})


def test_a_replica_refusing_to_drop_a_label_still_drops_it_on_the_others_and_audits_it(repo: Path) -> None:
    models_config.save_model(repo, ServedModel("demo", "demo", (1, 2), {"stable": 1, "canary": 2}))
    first, refusing, last = FakeModelService(repo), Refusing(repo, accepting=1), FakeModelService(repo)
    options = MoveOptions(drain_s=0)
    with fake_group(repo, first, refusing, last) as (group, targets), pytest.raises(ServerError) as raised:
        drop_label(repo, "demo", "canary", options=replace(options, server=group), reason="refused")

    assert str(raised.value) == (
        f"model server {targets[1]} rejected the config: disk full (canary removed on every replica but {targets[1]}; "
        "see the log)"
    )
    # The replica after the refusing one was not skipped: every replica but the refusing one dropped the label.
    assert (first.last_labels("demo"), last.last_labels("demo")) == ({"stable": 1}, {"stable": 1})
    assert refusing.last_labels("demo") == {"stable": 1, "canary": 2}
    assert models_config.load_model(repo, "demo").labels == {"stable": 1}
    [record] = audit.read_records(repo)
    assert (record.action, record.label, record.old_version) == ("unlabel", "canary", 2)
    assert record.servers == tuple(targets)


def test_a_replica_that_became_ready_during_the_move_fails_it_by_name_after_the_others_moved(repo: Path) -> None:
    known, newcomer = FakeModelService(repo), FakeModelService(repo)
    with fake_group(repo, known, newcomer) as (_, targets):
        group = replicas.ReplicaGroup([ModelServerClient(targets[0])])  # resolved before the newcomer was ready
        options = MoveOptions(server=group, drain_s=0, discover=lambda: list(targets))
        try:
            with pytest.raises(CommandError) as raised:
                move_label(repo, "demo", 2, options=options)
        finally:
            group.close()

    assert str(raised.value) == (
        f"demo: stable moved to 2, but {targets[1]} became ready during the move and may serve the labels of an "
        "older models.config: restart it (it reads the file, now current, at start-up)"
    )
    assert known.last_labels("demo") == {"stable": 2}
    assert newcomer.last_labels("demo") == {"stable": 1}  # never reloaded: hence the error
    assert models_config.load_model(repo, "demo") == ServedModel("demo", "demo", (2,), {"stable": 2})
    assert [record.new_version for record in audit.read_records(repo)] == [2]  # the move happened: audited


def test_the_group_load_timeout_names_the_whole_timeout_and_the_slow_replica(repo: Path) -> None:
    models_config.save_model(repo, ServedModel("demo", "demo", (1, 2), {"stable": 1}))
    fakes = FakeModelService(repo), FakeModelService(repo, never_load={2})
    with fake_group(repo, *fakes) as (group, targets), pytest.raises(TimeoutError) as raised:
        group.wait_available("demo", 2, timeout_s=0.5, poll_s=0.05)

    assert str(raised.value) == f"demo version 2 not AVAILABLE after 0.5 s (state LOADING) on replica {targets[1]}"


def test_all_replicas_takes_one_address_family_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {
        "localhost": [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")],  # one server, two families
        "v6-only": [(socket.AF_INET6, "fd00::7"), (socket.AF_INET6, "fd00::8")],
    }
    monkeypatch.setattr(replicas.socket, "getaddrinfo", fake_getaddrinfo(table))

    assert replicas.replica_targets("localhost:8600", all_replicas=True) == ["127.0.0.1:8600"]
    assert replicas.replica_targets("v6-only:8500", all_replicas=True) == ["[fd00::7]:8500", "[fd00::8]:8500"]


def test_models_show_with_all_replicas_and_no_ready_pod_warns_and_shows_the_files_states(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(replicas.socket, "getaddrinfo", fake_getaddrinfo({"tfserving-pods": []}))
    monkeypatch.setenv("TLSERVE_ALL_REPLICAS", "true")  # as the admin pod sets it
    monkeypatch.setenv("TLSERVE_MODEL_SERVER", "tfserving-pods:8500")

    code, out, err = run(capsys, "models", "show", "demo", "--models-dir", str(repo), "--json")

    assert code == 0, err
    assert {row["version"]: row["state"] for row in json.loads(out)["versions"]} == {
        1: "configured", 2: "on disk", 3: "on disk"}  # fmt: skip
    assert "--all-replicas: tfserving-pods has no addresses (no ready replica?)" in caplog.text
    code, _, err = run(capsys, "models", "list", "--models-dir", str(repo), "--server", "a:1,,b:2")
    assert (code, "empty address" in err) == (2, True)  # a malformed list is still a usage error
