"""`tlserve retrain` on tiny generated data: warm start, stable holdout, publish as canary, promote or keep back."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from promotion.promote import MoveOptions
from tests.training.small import small_run
from tlserve import audit, models_config
from tlserve.cli import main

pytestmark = pytest.mark.slow

GATES_THAT_PASS = ["--accuracy-tolerance", "1", "--min-class-recall", "0", "--latency-factor", "1000"]


def fast(models_dir: Path) -> list[str]:
    """One epoch, and run directories beside the test's models/ (not in the working directory)."""
    return ["--epochs", "1", "--runs-dir", str(models_dir.parent / "runs")]


def add_images(root: Path, per_class: int, *, seed: int) -> None:
    """New files beside the old ones (new names), as a labelling team would deliver them."""
    from training.data.sample import render_shape

    for class_dir in sorted(path for path in root.iterdir() if path.is_dir()):
        for index in range(per_class):
            rng = np.random.default_rng([seed, index, len(class_dir.name)])
            render_shape(class_dir.name, 40, rng).save(class_dir / f"new_{seed}_{index:04d}.png", "PNG")


@pytest.fixture(scope="module")
def first_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.sample import SampleSpec, write_sample

    root = tmp_path_factory.mktemp("data") / "shapes"
    write_sample(root, SampleSpec(classes=3, per_class=12, size=40, seed=1))
    return root


@pytest.fixture(scope="module")
def stable_repo(first_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """models/ with version 1 of `tiny` trained on the first data and labelled stable (offline)."""
    from promotion.promote import move_label
    from training.publish import publish_run
    from training.train import train

    root = tmp_path_factory.mktemp("repo")
    config, run = small_run(first_data, root / "runs", name="tiny", epochs=2, dense_units=16, head="gap", seed=7)
    result = train(config, run, progress=False)
    models_dir = root / "models"
    version = publish_run(result, models_dir, "tiny")
    move_label(models_dir, "tiny", version)
    return models_dir, result


@pytest.fixture
def repo(stable_repo: tuple[Path, object], tmp_path: Path) -> Path:
    """A private copy of the stable repository, so each test may promote or refuse freely."""
    models_dir = tmp_path / "models"
    shutil.copytree(stable_repo[0], models_dir)
    return models_dir


@pytest.fixture(scope="module")
def grown_data(first_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grown") / "shapes"
    shutil.copytree(first_data, root)
    add_images(root, 8, seed=2)
    return root


def test_retraining_after_adding_images_keeps_every_old_test_image_in_the_test_split(
    first_data: Path, grown_data: Path
) -> None:
    from training.data import scan_dataset

    before = {record.rel_path for record in scan_dataset(first_data, progress=False).split("test")}
    after_scan = scan_dataset(grown_data, progress=False)
    after = {record.rel_path for record in after_scan.split("test")}

    assert before, "the first dataset must have a test split for this test to mean anything"
    assert before <= after
    assert len(after_scan.records) > len(scan_dataset(first_data, progress=False).records)


def test_warm_start_restores_the_stable_versions_weights(stable_repo: tuple[Path, object]) -> None:
    from training.model import build_classifier
    from training.warmstart import restore_weights

    models_dir, result = stable_repo
    fresh = build_classifier(result.config, 3)
    trained = [np.asarray(weight) for weight in result.classifier.model.weights]
    assert not np.allclose(np.asarray(fresh.model.weights[-2]), trained[-2])

    restore_weights(fresh.model, models_dir / "tiny" / "1")

    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(fresh.model.weights, trained, strict=True))


def test_retrain_publishes_candidate_and_promotes_when_every_gate_passes(
    repo: Path, grown_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["retrain", str(grown_data), "--name", "tiny", "--models-dir", str(repo), "--offline",
                 *fast(repo), "--promote-if-better", *GATES_THAT_PASS])  # fmt: skip

    out = capsys.readouterr().out
    assert code == 0, out
    assert "warm start from 1" in out
    assert "signature: pass" in out
    assert "quality: pass" in out
    assert "infra: pass" in out
    assert "promoted: tiny stable 1 -> 2" in out
    assert models_config.load_model(repo, "tiny").labels == {"stable": 2}
    moves = [(r.action, r.label, r.old_version, r.new_version) for r in audit.read_records(repo, "tiny")]
    assert moves[-2:] == [("promote", "canary", None, 2), ("promote", "stable", 1, 2)]
    assert audit.read_records(repo, "tiny")[-1].metrics["accuracy"] >= 0


def test_retrain_keeps_back_a_candidate_that_fails_a_gate_and_says_why(
    repo: Path, grown_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["retrain", str(grown_data), "--name", "tiny", "--models-dir", str(repo), "--offline",
                 *fast(repo), "--promote-if-better", "--min-class-recall", "1.01",
                 "--latency-factor", "1000", "--json"])  # fmt: skip

    captured = capsys.readouterr()
    assert code == 1
    assert "tlserve: error: quality gate refused: recall of 'circle'" in captured.err
    assert "< floor 1.010" in captured.err
    assert "kept back: tiny version 2 stays off stable" in captured.out
    summary = json.loads(captured.out[captured.out.index("\n{") :])  # --json: the summary, refusal included
    assert (summary["candidate"], summary["stable"], summary["promoted"]) == (2, 1, False)
    assert "< floor 1.010" in summary["refused"]
    quality = next(gate for gate in summary["gates"] if gate["gate"] == "quality")
    assert quality["passed"] is False
    assert "recall of 'circle'" in quality["detail"]
    model = models_config.load_model(repo, "tiny")
    assert model.labels == {"stable": 1}  # the refused canary lost its label
    assert (repo / "tiny" / "2" / "saved_model.pb").is_file()  # but stays on disk for inspection
    assert audit.read_records(repo, "tiny")[-1].action == "refused"


def test_retrain_of_an_unknown_dataset_folder_is_a_usage_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["retrain", str(repo / "nowhere"), "--name", "tiny", "--models-dir", str(repo), "--offline"])

    assert code == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert models_config.load_model(repo, "tiny").labels == {"stable": 1}


def test_retrain_checks_the_dataset_folder_before_importing_tensorflow(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from tlserve.cli import main\n"
        f"code = main(['retrain', {str(tmp_path / 'nowhere')!r}, '--name', 'tiny', '--offline',\n"
        f"             '--models-dir', {str(tmp_path / 'models')!r}])\n"
        "print(code, 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parents[2])  # fmt: skip

    assert result.stdout.split() == ["2", "False"], result.stderr
    assert result.stderr == f"tlserve: error: dataset folder not found: {tmp_path / 'nowhere'}\n"


def test_retrain_of_an_unlabelled_latest_policy_model_never_stops_serving_the_old_version(
    repo: Path, grown_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an older tlserve left (and models/models.config.example ships): latest policy, no label, no audit log.

    Publishing the candidate would make the server load it and drop version 1; the retrain pins 1 as stable
    first, so a refused candidate leaves version 1 served and the candidate unloaded."""
    from promotion.client import ModelServerClient
    from tests.conftest import random_images
    from tests.support.modelserver import predict_request, running_model_server

    audit.audit_path(repo).unlink()
    models_config.write_config(repo / "models.config", models_config.put_model(
        models_config.read_config(repo / "nothing.config"), models_config.ServedModel("tiny", "tiny")
    ))  # fmt: skip
    with running_model_server(repo) as server, ModelServerClient(server.target) as client:
        online = ["--server", server.target, "--drain", "0"]
        code = main(["retrain", str(grown_data), "--name", "tiny", "--models-dir", str(repo), *online, *fast(repo),
                     "--promote-if-better", "--min-class-recall", "1.01", "--latency-factor", "1000"])  # fmt: skip
        captured = capsys.readouterr()
        # One file-system poll pass, run here rather than waited for: had the retrain left the candidate aspired
        # (latest policy), this pass would load it and the check below would see it AVAILABLE.
        server.server.manager.poll()
        states = client.version_states("tiny")
        images = random_images(1)
        unpinned = server.prediction_stub().Predict(predict_request(images, "tiny"), timeout=30)
        stable = server.prediction_stub().Predict(predict_request(images, "tiny", version_label="stable"), timeout=30)

    assert code == 1, captured.out
    assert "pinned tiny version 1 as stable" in captured.out
    assert states.get(1) == "AVAILABLE"
    assert states.get(2) != "AVAILABLE"
    assert (unpinned.model_spec.version.value, stable.model_spec.version.value) == (1, 1)
    assert models_config.load_model(repo, "tiny") == models_config.ServedModel("tiny", "tiny", (1,), {"stable": 1})
    pin = audit.read_records(repo, "tiny")[0]
    assert (pin.action, pin.label, pin.old_version, pin.new_version) == ("promote", "stable", None, 1)
    assert pin.reason == "pin served version before retrain"


def test_retrain_against_a_running_model_server_gates_and_promotes_there(
    repo: Path, grown_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import random_images
    from tests.support.modelserver import predict_request, running_model_server

    with running_model_server(repo) as server:
        online = ["--server", server.target, "--drain", "0"]
        code = main(["retrain", str(grown_data), "--name", "tiny", "--models-dir", str(repo), *online,
                     *fast(repo), "--promote-if-better", *GATES_THAT_PASS])  # fmt: skip
        out = capsys.readouterr().out
        request = predict_request(random_images(1), "tiny", version_label="stable")
        answered = server.prediction_stub().Predict(request, timeout=30).model_spec.version.value

    assert code == 0, out
    assert "infra: pass (p95" in out
    assert "no stable to compare" not in out  # stable was timed on the server too
    assert answered == 2
    assert models_config.load_model(repo, "tiny") == models_config.ServedModel("tiny", "tiny", (2,), {"stable": 2})


def test_retrain_keeps_back_a_candidate_the_model_server_cannot_load(
    repo: Path, grown_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.promotion.promote_fakes import FakeModelService, start_fake

    fake = FakeModelService(repo, never_load={2})
    fake.boot(models_config.absolute_config(models_config.read_config(repo / "models.config"), repo))
    server, target = start_fake(fake)
    try:
        online = ["--server", target, "--drain", "0", "--load-timeout", "0.5"]
        code = main(["retrain", str(grown_data), "--name", "tiny", "--models-dir", str(repo), *online,
                     *fast(repo), "--promote-if-better", *GATES_THAT_PASS])  # fmt: skip
    finally:
        server.stop(None)

    captured = capsys.readouterr()
    assert code == 1, captured.out
    assert "infra gate refused: candidate did not load: tiny version 2 did not become AVAILABLE" in captured.err
    assert fake.last_labels("tiny") == {"stable": 1}
    assert models_config.load_model(repo, "tiny").labels == {"stable": 1}


def test_retrain_with_a_new_class_is_refused_by_the_signature_gate(
    repo: Path, grown_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.data.sample import render_shape

    data = tmp_path / "shapes"
    shutil.copytree(grown_data, data)
    (data / "star").mkdir()
    for index in range(14):
        render_shape("star", 40, np.random.default_rng([3, index])).save(data / "star" / f"star_{index:04d}.png")

    code = main(["retrain", str(data), "--name", "tiny", "--models-dir", str(repo), "--offline", *fast(repo),
                 "--weights", "none", "--promote-if-better", *GATES_THAT_PASS])  # fmt: skip

    captured = capsys.readouterr()
    assert code == 1, captured.out
    assert "(trained from the base weights)" in captured.out
    assert "signature gate refused: classes ['circle', 'square', 'star', 'triangle'] != stable" in captured.err
    assert models_config.load_model(repo, "tiny").labels == {"stable": 1}


def test_retrain_with_all_replicas_resolves_the_replicas_after_training_not_before(
    repo: Path, grown_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No TF Serving pod is ready when the retrain starts (the one there was is being replaced); one is by the
    time training ends. The label moves go to the pod that is there then."""
    from promotion import replicas, retrain
    from tests.conftest import random_images
    from tests.promotion.replica_fakes import fake_getaddrinfo
    from tests.support.modelserver import predict_request, running_model_server

    table: dict[str, list[tuple[int, str]]] = {"tfserving-pods": []}
    real_getaddrinfo, real_warm_train = replicas.socket.getaddrinfo, retrain.warm_train
    fake = fake_getaddrinfo(table)

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> object:
        return (fake if host == "tfserving-pods" else real_getaddrinfo)(host, *args, **kwargs)

    monkeypatch.setattr(replicas.socket, "getaddrinfo", getaddrinfo)

    def warm_train_then_a_pod_is_ready(*args: object, **kwargs: object) -> object:
        trained = real_warm_train(*args, **kwargs)
        table["tfserving-pods"] = [(socket.AF_INET, "127.0.0.1")]
        return trained

    monkeypatch.setattr(retrain, "warm_train", warm_train_then_a_pod_is_ready)
    with running_model_server(repo) as server:
        online = ["--server", f"tfserving-pods:{server.port}", "--all-replicas", "--drain", "0"]
        code = main(["retrain", str(grown_data), "--name", "tiny", "--models-dir", str(repo), *online,
                     *fast(repo), "--promote-if-better", *GATES_THAT_PASS])  # fmt: skip
        captured = capsys.readouterr()
        request = predict_request(random_images(1), "tiny", version_label="stable")
        answered = server.prediction_stub().Predict(request, timeout=30).model_spec.version.value

    assert code == 0, captured.err
    assert "promoted: tiny stable 1 -> 2" in captured.out
    assert answered == 2


def test_retrain_keeps_back_with_exit_1_when_a_replica_refuses_to_drop_the_canary(
    repo: Path, grown_data: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from tests.promotion.promote_fakes import FakeModelService
    from tests.promotion.replica_fakes import Refusing, started_fakes

    # The second replica takes its boot config and the canary move's three steps, then refuses everything.
    steady, refusing = FakeModelService(repo), Refusing(repo, accepting=4)
    with started_fakes(repo, steady, refusing) as targets:
        online = ["--server", ",".join(targets), "--drain", "0", "--load-timeout", "30"]
        code = main(["retrain", str(grown_data), "--name", "tiny", "--models-dir", str(repo), *online, *fast(repo),
                     "--promote-if-better", "--min-class-recall", "1.01", "--latency-factor", "1000"])  # fmt: skip

    captured = capsys.readouterr()
    assert code == 1, captured.err  # kept back, not a usage error: the refusal stands
    assert "quality gate refused" in captured.err
    assert f"model server {targets[1]} rejected the config: disk full" in caplog.text
    assert f"canary removed on every replica but {targets[1]}" in caplog.text
    assert steady.last_labels("tiny") == {"stable": 1}
    assert refusing.last_labels("tiny") == {"stable": 1, "canary": 2}
    assert models_config.load_model(repo, "tiny").labels == {"stable": 1}
    actions = [(record.action, record.label) for record in audit.read_records(repo, "tiny")]
    assert actions[-2:] == [("unlabel", "canary"), ("refused", "stable")]


# --- the flow without argparse: typed options, a connect callable, a returned result -----------------------------


def test_the_retrain_flow_runs_from_typed_options_and_returns_what_it_did(repo: Path, grown_data: Path) -> None:
    from promotion.gates import GateThresholds
    from promotion.retrain import RetrainOptions, offline, retrain

    options = RetrainOptions(
        data=grown_data, name="tiny", models_dir=repo, promote_if_better=True,
        thresholds=GateThresholds(accuracy_tolerance=1, min_class_recall=0, latency_factor=1000),
        overrides={"epochs": 1, "runs_dir": str(repo.parent / "runs")},
    )  # fmt: skip
    progress: list[str] = []

    result = retrain(options, offline(), notify=progress.append)

    assert result.promoted
    assert (result.summary["candidate"], result.summary["stable"]) == (2, 1)
    assert [gate["gate"] for gate in result.summary["gates"]] == ["signature", "quality", "infra"]
    assert "promoted: tiny stable 1 -> 2" in progress
    assert models_config.load_model(repo, "tiny").labels == {"stable": 2}


def test_the_retrain_flow_raises_a_refusal_that_carries_the_gates_numbers(repo: Path, grown_data: Path) -> None:
    from promotion.gates import GateThresholds
    from promotion.retrain import RetrainOptions, RetrainRefused, retrain

    options = RetrainOptions(
        data=grown_data, name="tiny", models_dir=repo, promote_if_better=True,
        thresholds=GateThresholds(min_class_recall=1.01, latency_factor=1000),
        overrides={"epochs": 1, "runs_dir": str(repo.parent / "runs")},
    )  # fmt: skip
    opened: list[str] = []

    @contextlib.contextmanager
    def connect() -> Iterator[MoveOptions]:
        opened.append("connect")
        yield MoveOptions()

    with pytest.raises(RetrainRefused) as refused:
        retrain(options, connect, notify=lambda _: None)

    assert refused.value.summary["promoted"] is False
    assert "< floor 1.010" in refused.value.summary["refused"]
    assert len(opened) >= 3  # canary, probe and keep-back each connect afresh
    assert models_config.load_model(repo, "tiny").labels == {"stable": 1}


def test_the_retrain_flow_refuses_an_unknown_dataset_folder_before_training(repo: Path) -> None:
    from promotion.retrain import RetrainOptions, offline, retrain
    from tlserve.console import CommandError

    with pytest.raises(CommandError, match="dataset folder not found"):
        retrain(RetrainOptions(data=repo / "nowhere", name="tiny", models_dir=repo), offline())
