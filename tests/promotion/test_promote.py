"""Two-step label moves against a fake ModelService that enforces TF Serving's label rule; rollback; retention."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promotion.client import ModelServerClient, ServerError
from promotion.promote import MoveOptions, drop_label, move_label
from promotion.retention import prune_versions
from promotion.rollback import rollback
from tests.promotion.promote_fakes import FakeModelService, start_fake
from tlserve import audit, models_config
from tlserve.console import CommandError, Refused
from tlserve.models_config import ServedModel


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    for version in (1, 2, 3):
        (models / "demo" / str(version)).mkdir(parents=True)
    models_config.save_model(models, ServedModel("demo", "demo", (1,), {"stable": 1}))
    return models


def boot(models_dir: Path, never_load: set[int] | None = None) -> tuple[FakeModelService, ModelServerClient, object]:
    fake = FakeModelService(models_dir, never_load)
    fake.boot(models_config.absolute_config(models_config.read_repository_config(models_dir), models_dir))
    grpc_server, target = start_fake(fake)
    return fake, ModelServerClient(target, rpc_timeout_s=30), grpc_server


@pytest.fixture
def served(models_dir: Path) -> Iterator[tuple[FakeModelService, MoveOptions]]:
    fake, client, grpc_server = boot(models_dir)
    yield fake, MoveOptions(server=client, drain_s=0)
    client.close()
    grpc_server.stop(None)


def test_fake_refuses_a_one_step_label_move_like_tf_serving(models_dir: Path, served) -> None:
    fake, options = served
    one_step = models_config.put_model(
        models_config.read_config(models_dir / "models.config"), ServedModel("demo", "demo", (1, 2), {"stable": 2})
    )
    with pytest.raises(ServerError, match="not AVAILABLE"):
        options.server.reload(models_config.absolute_config(one_step, models_dir))
    assert fake.last_labels("demo") == {"stable": 1}


def test_promote_loads_new_version_before_moving_label_then_unloads_old(models_dir: Path, served) -> None:
    fake, options = served

    move = move_label(models_dir, "demo", 2, options=options, reason="better")

    assert (move.old_version, move.new_version, move.changed) == (1, 2, True)
    steps = [models_config.get_model(config, "demo") for config in fake.accepted[1:]]
    assert [(step.versions, dict(step.labels)) for step in steps] == [
        ((1, 2), {"stable": 1}),
        ((1, 2), {"stable": 2}),
        ((2,), {"stable": 2}),
    ]
    assert fake.rejected == []
    assert models_config.load_model(models_dir, "demo") == ServedModel("demo", "demo", (2,), {"stable": 2})


def test_promote_sends_absolute_base_paths_but_keeps_the_file_relative(models_dir: Path, served) -> None:
    fake, options = served
    move_label(models_dir, "demo", 2, options=options)

    assert fake.accepted[-1].model_config_list.config[0].base_path == str(models_dir.resolve() / "demo")
    assert models_config.load_model(models_dir, "demo").base_path == "demo"


def test_promote_is_audited_with_who_old_new_reason_and_metrics(models_dir: Path, served) -> None:
    _fake, options = served
    move_label(models_dir, "demo", 2, options=options, reason="nightly", metrics={"accuracy": 0.9})

    [record] = audit.read_records(models_dir, "demo")
    assert (record.action, record.label, record.old_version, record.new_version) == ("promote", "stable", 1, 2)
    assert record.reason == "nightly"
    assert record.metrics == {"accuracy": 0.9}
    assert "@" in record.who
    assert record.when.endswith("+00:00")


class UnloadFails:
    """A server that accepts steps 1 and 2 of a move and fails the reload of step 3 (the unload)."""

    target = "stub:8500"

    def __init__(self) -> None:
        self.reloads = 0

    @property
    def replicas(self) -> tuple[UnloadFails]:
        return (self,)

    def reload(self, config) -> None:
        self.reloads += 1
        if self.reloads == 3:
            raise ServerError("reload config on model server stub failed: UNAVAILABLE")

    def wait_available(self, name: str, version: int, *, timeout_s: float) -> None:
        return None


def test_the_move_is_audited_before_the_unload_so_a_failed_unload_keeps_the_record(models_dir: Path) -> None:
    server = UnloadFails()
    with pytest.raises(ServerError, match="UNAVAILABLE"):
        move_label(models_dir, "demo", 2, options=MoveOptions(server=server, drain_s=0), reason="nightly")

    assert server.reloads == 3
    [record] = audit.read_records(models_dir, "demo")
    assert (record.action, record.old_version, record.new_version, record.reason) == ("promote", 1, 2, "nightly")
    assert record.servers == ("stub:8500",)
    # The file matches what the server still serves (step 2): both versions, stable on the new one.
    assert models_config.load_model(models_dir, "demo") == ServedModel("demo", "demo", (1, 2), {"stable": 2})


def test_dropping_the_only_label_keeps_serving_the_other_versions_not_the_dropped_one(models_dir: Path) -> None:
    models_config.save_model(models_dir, ServedModel("demo", "demo", (1, 3), {"canary": 3}))

    assert drop_label(models_dir, "demo", "canary", reason="refused") == 3
    assert models_config.load_model(models_dir, "demo") == ServedModel("demo", "demo", (1,), {})


def test_promote_to_the_current_version_changes_nothing(models_dir: Path, served) -> None:
    fake, options = served
    move = move_label(models_dir, "demo", 1, options=options)

    assert move.changed is False
    assert len(fake.accepted) == 1
    assert audit.read_records(models_dir) == []


def test_repeating_a_promote_killed_after_its_label_step_unloads_the_old_version(models_dir: Path) -> None:
    models_config.save_model(models_dir, ServedModel("demo", "demo", (1, 2), {"stable": 2}))  # killed before step 3
    fake, client, grpc_server = boot(models_dir)
    try:
        move = move_label(models_dir, "demo", 2, options=MoveOptions(server=client, drain_s=0))
    finally:
        client.close()
        grpc_server.stop(None)

    assert move.changed is False
    assert models_config.get_model(fake.accepted[-1], "demo").versions == (2,)
    assert models_config.load_model(models_dir, "demo").versions == (2,)


def test_promote_of_a_missing_version_is_a_usage_error(models_dir: Path, served) -> None:
    _fake, options = served
    with pytest.raises(CommandError, match="no version 9"):
        move_label(models_dir, "demo", 9, options=options)


def test_promote_refuses_and_restores_config_when_new_version_never_loads(models_dir: Path) -> None:
    before = (models_dir / "models.config").read_text()
    fake, client, grpc_server = boot(models_dir, never_load={2})
    try:
        options = MoveOptions(server=client, load_timeout_s=0.3, drain_s=0)
        with pytest.raises(Refused, match="did not become AVAILABLE, stable unchanged"):
            move_label(models_dir, "demo", 2, options=options)
    finally:
        client.close()
        grpc_server.stop(None)

    assert (models_dir / "models.config").read_text() == before
    assert models_config.get_model(fake.accepted[-1], "demo").versions == (1,)
    assert fake.last_labels("demo") == {"stable": 1}
    assert audit.read_records(models_dir) == []


def test_unreachable_server_is_a_one_line_error_and_config_is_restored(models_dir: Path) -> None:
    before = (models_dir / "models.config").read_text()
    with (
        # Nothing listens on port 1: the connection is refused at once (UNAVAILABLE). The deadline is generous so a
        # loaded machine cannot turn that into DEADLINE_EXCEEDED.
        ModelServerClient("127.0.0.1:1", rpc_timeout_s=30) as client,
        pytest.raises(ServerError, match=r"reload config on model server 127\.0\.0\.1:1 failed: UNAVAILABLE"),
    ):
        move_label(models_dir, "demo", 2, options=MoveOptions(server=client, drain_s=0))
    assert (models_dir / "models.config").read_text() == before


def test_canary_label_moves_without_touching_stable(models_dir: Path, served) -> None:
    fake, options = served
    move_label(models_dir, "demo", 3, label="canary", options=options)

    assert fake.last_labels("demo") == {"stable": 1, "canary": 3}
    assert models_config.load_model(models_dir, "demo").versions == (1, 3)


def test_promoting_the_canary_to_stable_drops_the_canary_label(models_dir: Path, served) -> None:
    fake, options = served
    move_label(models_dir, "demo", 3, label="canary", options=options)
    move_label(models_dir, "demo", 3, options=options)

    assert fake.last_labels("demo") == {"stable": 3}
    assert models_config.load_model(models_dir, "demo").versions == (3,)


def test_offline_promote_only_rewrites_the_config(models_dir: Path) -> None:
    move = move_label(models_dir, "demo", 3)

    assert move.new_version == 3
    assert models_config.load_model(models_dir, "demo") == ServedModel("demo", "demo", (3,), {"stable": 3})
    assert [record.new_version for record in audit.read_records(models_dir)] == [3]


def test_rollback_restores_the_previous_stable_and_walks_back_further(models_dir: Path, served) -> None:
    fake, options = served
    move_label(models_dir, "demo", 2, options=options)
    move_label(models_dir, "demo", 3, options=options)

    first = rollback(models_dir, "demo", options=options)
    assert (first.old_version, first.new_version) == (3, 2)
    assert fake.last_labels("demo") == {"stable": 2}

    second = rollback(models_dir, "demo", options=options)
    assert (second.old_version, second.new_version) == (2, 1)
    assert fake.last_labels("demo") == {"stable": 1}
    assert [record.action for record in audit.read_records(models_dir)] == ["promote"] * 2 + ["rollback"] * 2


def test_rollback_without_history_is_refused(models_dir: Path) -> None:
    with pytest.raises(Refused, match="no previous stable version of demo"):
        rollback(models_dir, "demo")


def test_retention_never_deletes_labelled_versions_nor_the_rollback_target(models_dir: Path) -> None:
    for version in (4, 5, 6):
        (models_dir / "demo" / str(version)).mkdir()
    move_label(models_dir, "demo", 2)
    move_label(models_dir, "demo", 3, label="canary")
    move_label(models_dir, "demo", 4)  # stable 4; rollback would go to 2

    deleted = prune_versions(models_dir, "demo", keep=1)

    assert deleted == [1, 5]
    assert sorted(int(path.name) for path in (models_dir / "demo").iterdir()) == [2, 3, 4, 6]
    assert models_config.load_model(models_dir, "demo").labels == {"stable": 4, "canary": 3}
