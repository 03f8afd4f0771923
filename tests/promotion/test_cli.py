"""`tlserve models list/show`, `tlserve promote`, `tlserve rollback`: output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import CLASSES
from tests.promotion.promote_fakes import FakeModelService, start_fake
from tlserve import audit, models_config
from tlserve.cli import main
from tlserve.contract import METADATA_FILE
from tlserve.models_config import ServedModel


def write_real_metadata(version_dir: Path, accuracy: float, created_at: str) -> None:
    """metadata.json as `tlserve train` writes it (training.export + training.publish), with a fixed creation time."""
    from training.export import ExportSpec, write_metadata
    from training.publish import summary_metrics

    run = SimpleNamespace(
        metrics={"accuracy": accuracy, "macro_f1": accuracy, "examples": 30, "per_class": {}},
        val_accuracy=accuracy,
        skipped={},
        duration_s=1.0,
    )
    write_metadata(version_dir, ExportSpec(classes=CLASSES, image_size=32, base="vgg16", metrics=summary_metrics(run)))
    path = version_dir / METADATA_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "created_at": created_at}))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    for version, accuracy in ((1, 0.81), (2, 0.86), (3, 0.9)):
        write_real_metadata(models / "demo" / str(version), accuracy, f"2026-11-0{version}T10:00:00+00:00")
    models_config.save_model(models, ServedModel("demo", "demo", (1,), {"stable": 1}))
    return models


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_list_shows_versions_and_labels(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "list", "--models-dir", str(repo))
    assert code == 0
    assert out.strip() == "demo: live 1; versions 1, 2, 3; labels stable=1"


def test_models_show_json_has_metrics_creation_time_and_state(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "show", "demo", "--models-dir", str(repo), "--json")
    shown = json.loads(out)

    assert code == 0
    assert shown["labels"] == {"stable": 1}
    assert shown["live"] == 1
    first, second = shown["versions"][:2]
    assert first["metrics"]["test_accuracy"] == 0.81
    assert {key: value for key, value in first.items() if key != "metrics"} == {
        "version": 1,
        "labels": ["stable"],
        "created_at": "2026-11-01T10:00:00+00:00",
        "state": "configured",
        "live": True,
    }
    assert second["state"] == "on disk"
    assert second["live"] is False


def test_models_show_prints_a_header_and_which_version_is_live(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "show", "demo", "--models-dir", str(repo))

    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("live 1")
    assert lines[1].split() == ["version", "live", "labels", "test", "acc", "created", "state"]
    rows = [line.split() for line in lines[2:5]]
    assert [row[:4] for row in rows] == [["1", "yes", "stable", "0.810"], ["2", "-", "-", "0.860"],
                                         ["3", "-", "-", "0.900"]]  # fmt: skip


def test_models_list_says_the_newest_served_version_is_live_without_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    for version in (1, 2):
        write_real_metadata(models / "demo" / str(version), 0.5, "2026-11-01T10:00:00+00:00")
    models_config.save_model(models, ServedModel("demo", "demo", (1,), {}))
    code, out, _ = run(capsys, "models", "list", "--models-dir", str(models))
    assert code == 0
    assert out.strip() == "demo: live 1; versions 1, 2; labels -"


def test_promote_of_a_model_without_the_label_prints_none_not_python_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    write_real_metadata(models / "demo" / "1", 0.5, "2026-11-01T10:00:00+00:00")
    code, out, err = run(capsys, "promote", "demo", "1", "--models-dir", str(models), "--offline")
    assert code == 0
    assert out.strip() == "demo: stable (none) -> 1"
    assert "None" not in err


def test_models_show_asks_the_model_server_for_states(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeModelService(repo, never_load={3})
    fake.boot(models_config.absolute_config(models_config.put_model(
        models_config.read_config(repo / "models.config"), ServedModel("demo", "demo", (1, 3), {"stable": 1})
    ), repo))  # fmt: skip
    server, target = start_fake(fake)
    try:
        code, out, _ = run(capsys, "models", "show", "demo", "--models-dir", str(repo), "--server", target)
    finally:
        server.stop(None)

    assert code == 0
    lines = out.splitlines()[2:]  # after the model line and the column headers
    assert lines[0].split()[-1] == "AVAILABLE"
    assert lines[1].split()[-2:] == ["not", "loaded"]
    assert lines[2].split()[-1] == "LOADING"


def test_models_dir_defaults_to_the_environment(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TLSERVE_MODELS_DIR", str(repo))
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    assert out.startswith("demo: live 1; versions 1, 2, 3")


def test_offline_promote_prints_the_move_and_rewrites_the_config(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "promote", "demo", "2", "--models-dir", str(repo), "--offline", "--reason", "manual")

    assert code == 0
    assert out.strip() == "demo: stable 1 -> 2"
    assert models_config.load_model(repo, "demo").labels == {"stable": 2}
    assert audit.read_records(repo)[-1].reason == "manual"


def test_promote_against_a_server_moves_the_label_there(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeModelService(repo)
    fake.boot(models_config.absolute_config(models_config.read_config(repo / "models.config"), repo))
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


def test_offline_promote_into_a_missing_repository_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-models"
    code, _, err = run(capsys, "promote", "demo", "1", "--models-dir", str(missing), "--offline")

    assert code == 2
    assert err.startswith("tlserve: error: no model 'demo' under ")
    assert len(err.splitlines()) == 1
    assert not missing.exists()  # neither the folder nor .promote.lock


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
    assert models_config.load_model(repo, "demo").labels == {"stable": 1}


def test_promote_with_keep_prunes_old_unlabelled_versions(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "demo" / "4").mkdir()
    code, out, _ = run(capsys, "promote", "demo", "3", "--models-dir", str(repo), "--offline", "--keep", "1")

    assert code == 0
    assert "deleted versions 2" in out
    # 3 is stable, 4 is the newest, 1 is where a rollback would go.
    assert sorted(path.name for path in (repo / "demo").iterdir()) == ["1", "3", "4"]
