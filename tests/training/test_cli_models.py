"""`tlserve models list/show`, `tlserve promote`, `tlserve rollback`: output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.promote_fakes import FakeModelService, start_fake
from tlserve.cli import main
from training import audit, modelconfig
from training.modelconfig import ServedModel


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    for version, accuracy in ((1, 0.81), (2, 0.86), (3, 0.9)):
        extra = models / "demo" / str(version) / "assets.extra"
        extra.mkdir(parents=True)
        metadata = {"metrics": {"accuracy": accuracy}, "created_at": f"2026-11-0{version}T10:00:00+00:00"}
        (extra / "metadata.json").write_text(json.dumps(metadata))
    modelconfig.save_model(models, ServedModel("demo", "demo", (1,), {"stable": 1}))
    return models


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_list_shows_versions_and_labels(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "list", "--models-dir", str(repo))
    assert code == 0
    assert out.strip() == "demo: versions 1, 2, 3; labels stable=1"


def test_models_show_json_has_metrics_creation_time_and_state(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "show", "demo", "--models-dir", str(repo), "--json")
    shown = json.loads(out)

    assert code == 0
    assert shown["labels"] == {"stable": 1}
    first, second = shown["versions"][:2]
    assert first == {
        "version": 1,
        "labels": ["stable"],
        "metrics": {"accuracy": 0.81},
        "created_at": "2026-11-01T10:00:00+00:00",
        "state": "configured",
    }
    assert second["state"] == "on disk"


def test_models_show_asks_the_model_server_for_states(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeModelService(repo, never_load={3})
    fake.boot(modelconfig.absolute_config(modelconfig.put_model(
        modelconfig.read_config(repo / "models.config"), ServedModel("demo", "demo", (1, 3), {"stable": 1})
    ), repo))  # fmt: skip
    server, target = start_fake(fake)
    try:
        code, out, _ = run(capsys, "models", "show", "demo", "--models-dir", str(repo), "--server", target)
    finally:
        server.stop(None)

    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[-1] == "AVAILABLE"
    assert lines[2].split()[-2:] == ["not", "loaded"]
    assert lines[3].split()[-1] == "LOADING"


def test_models_dir_defaults_to_the_environment(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TLSERVE_MODELS_DIR", str(repo))
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    assert out.startswith("demo: versions 1, 2, 3")


def test_offline_promote_prints_the_move_and_rewrites_the_config(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "promote", "demo", "2", "--models-dir", str(repo), "--offline", "--reason", "manual")

    assert code == 0
    assert out.strip() == "demo: stable 1 -> 2"
    assert modelconfig.load_model(repo, "demo").labels == {"stable": 2}
    assert audit.read_records(repo)[-1].reason == "manual"


def test_promote_against_a_server_moves_the_label_there(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeModelService(repo)
    fake.boot(modelconfig.absolute_config(modelconfig.read_config(repo / "models.config"), repo))
    server, target = start_fake(fake)
    try:
        code, out, _ = run(capsys, "promote", "demo", "3", "--models-dir", str(repo), "--server", target,
                           "--drain", "0")  # fmt: skip
    finally:
        server.stop(None)

    assert code == 0, out
    assert fake.last_labels("demo") == {"stable": 3}
    assert fake.rejected == []


def test_promote_of_a_missing_version_exits_2_with_one_line(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "promote", "demo", "7", "--models-dir", str(repo), "--offline")
    assert code == 2
    assert err == f"tlserve: error: demo has no version 7 under {repo}\n"


def test_promote_to_an_unreachable_server_exits_2_without_traceback(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (repo / "models.config").read_text()
    code, _, err = run(capsys, "promote", "demo", "2", "--models-dir", str(repo), "--server", "127.0.0.1:1")

    assert code == 2
    assert err.startswith("tlserve: error: reload config on model server 127.0.0.1:1 failed: UNAVAILABLE")
    assert "Traceback" not in err
    assert (repo / "models.config").read_text() == before


def test_rollback_without_history_exits_1(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rollback", "demo", "--models-dir", str(repo), "--offline")
    assert code == 1
    assert "no previous stable version of demo" in err


def test_rollback_after_promote_restores_the_previous_stable(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "promote", "demo", "2", "--models-dir", str(repo), "--offline")
    code, out, _ = run(capsys, "rollback", "demo", "--models-dir", str(repo), "--offline")

    assert code == 0
    assert out.strip() == "demo: stable rolled back 2 -> 1"
    assert modelconfig.load_model(repo, "demo").labels == {"stable": 1}


def test_promote_with_keep_prunes_old_unlabelled_versions(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "demo" / "4").mkdir()
    code, out, _ = run(capsys, "promote", "demo", "3", "--models-dir", str(repo), "--offline", "--keep", "1")

    assert code == 0
    assert "deleted versions 2" in out
    # 3 is stable, 4 is the newest, 1 is where a rollback would go.
    assert sorted(path.name for path in (repo / "demo").iterdir()) == ["1", "3", "4"]
