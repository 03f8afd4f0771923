"""`tlserve train` / `tlserve evaluate` and the config contract: TOML keys == flags, flags win, errors exit 2."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from tlserve import contract
from tlserve.cli import build_parser, main
from training.cli import train_config_from_args
from training.config import HYPERPARAMETERS, RUN_OPTIONS, RunOptions, TrainConfig

SMALL_FLAGS = ["--weights", "none", "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--dense-units", "8"]


def config_for(argv: list[str]) -> TrainConfig:
    return train_config_from_args(build_parser().parse_args(["train", *argv]))[0]


def run_for(argv: list[str]) -> RunOptions:
    return train_config_from_args(build_parser().parse_args(["train", *argv]))[1]


def test_every_config_key_is_a_flag_of_train() -> None:
    train_help = build_parser()._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    for item in (*fields(TrainConfig), *fields(RunOptions)):
        if item.name != "data":
            assert "--" + item.name.replace("_", "-") in train_help, item.name


def test_toml_file_sets_every_key_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text(
        'base = "resnet50"\nimage-size = 96\nepochs = 9\naugment = true\nlearning_rate = 0.01\nfine_tune_from = 4\n'
    )
    config = config_for(["data", "--config", str(path), "--epochs", "2", "--no-augment"])
    assert config.base == "resnet50"
    assert config.image_size == 96
    assert config.learning_rate == 0.01
    assert config.fine_tune_from == "4"
    assert config.epochs == 2, "a flag beats the file"
    assert config.augment is False, "--no-augment beats augment = true"


def test_a_file_holding_every_default_gives_the_default_config(tmp_path: Path) -> None:
    lines = []
    for key, value in TrainConfig().to_dict().items():
        lines.append(f"{key} = {json.dumps(value)}")
    (tmp_path / "all.toml").write_text("\n".join(lines) + "\n")
    assert config_for(["--config", str(tmp_path / "all.toml")]) == TrainConfig()


def test_run_options_come_from_the_file_or_flags_but_stay_out_of_the_hyper_parameters(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text('name = "pets"\nruns-dir = "elsewhere"\nepochs = 3\njson = true\n')
    run = run_for(["pets-images", "--config", str(path), "--models-dir", "repo"])
    assert run == RunOptions(data="pets-images", name="pets", models_dir="repo", runs_dir="elsewhere", json=True)
    assert config_for(["pets-images", "--config", str(path)]) == TrainConfig(epochs=3)
    assert not set(HYPERPARAMETERS) & set(RUN_OPTIONS)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("learning_rat = 0.1\n", "unknown key 'learning_rat'"),
        ('epochs = "five"\n', "epochs must be a int"),
        ('optimizer = "adagrad"\n', "--optimizer must be one of"),
        ("image_size = 16\n", "--image-size must be at least 32"),
        ("epochs = \n", "invalid TOML"),
    ],
)
def test_bad_config_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, message: str
) -> None:
    (tmp_path / "bad.toml").write_text(toml)
    (tmp_path / "data").mkdir()
    code = main(["train", str(tmp_path / "data"), "--name", "x", "--config", str(tmp_path / "bad.toml")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1


def test_bad_flag_value_and_missing_data_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    assert main(["train", str(tmp_path / "data"), "--name", "x", "--dropout", "1.5"]) == 2
    assert "--dropout must be in [0, 1)" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nowhere"), "--name", "x"]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "data")]) == 2
    assert "missing --name" in capsys.readouterr().err


@pytest.mark.slow
def test_train_publishes_a_version_and_evaluate_reads_it_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.data.sample import SampleSpec, write_sample

    write_sample(tmp_path / "data", SampleSpec(classes=3, per_class=8, size=36, seed=2))
    monkeypatch.setenv("TLSERVE_MODELS_DIR", str(tmp_path / "models"))
    argv = ["train", str(tmp_path / "data"), "--name", "shapes", "--runs-dir", str(tmp_path / "runs"), "--json"]
    assert main([*argv, *SMALL_FLAGS]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["version"] == 1
    version_dir = tmp_path / "models" / "shapes" / "1"
    assert Path(summary["path"]) == version_dir
    metadata = json.loads((version_dir / contract.METADATA_FILE).read_text())
    assert metadata["metrics"]["test_accuracy"] == summary["test_accuracy"]
    assert metadata["config"]["epochs"] == 1
    assert sorted(metadata["config"]) == sorted(HYPERPARAMETERS), "a version records hyper-parameters, no run options"
    run_dir = Path(summary["run_dir"])
    assert json.loads((run_dir / "run.json").read_text())["runs_dir"] == str(tmp_path / "runs")
    assert "runs_dir" not in json.loads((run_dir / "config.json").read_text())
    assert metadata["data_fingerprint"]
    assert (version_dir / contract.WARMUP_FILE).stat().st_size > 0

    out = tmp_path / "evaluation"
    assert main(["evaluate", str(version_dir.parent), str(tmp_path / "data"), "--out", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == 24
    assert (out / "confusion_matrix.png").is_file()
    assert (out / "report.md").read_text().startswith("# Evaluation")


def test_train_exits_2_and_publishes_nothing_when_imagenet_weights_cannot_be_had(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    from training.data.sample import SampleSpec, write_sample

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] no network")

    monkeypatch.setattr(keras.applications, "VGG16", offline)
    write_sample(tmp_path / "data", SampleSpec(classes=2, per_class=6, size=36, seed=2))
    argv = ["train", str(tmp_path / "data"), "--name", "x", "--runs-dir", str(tmp_path / "runs")]
    argv += ["--models-dir", str(tmp_path / "models"), "--image-size", "32", "--epochs", "1", "--json"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--weights PATH" in err
    assert "--weights none" in err
    assert contract.list_versions(tmp_path / "models" / "x") == [], "no version of a model trained on a random base"


def test_evaluate_on_the_training_folder_warns_and_never_overwrites_a_report(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import shutil

    from training.data.sample import SampleSpec, write_sample

    write_sample(tmp_path / "data", SampleSpec(classes=3, per_class=8, size=36, seed=2))
    monkeypatch.chdir(tmp_path)
    argv = ["train", "data", "--name", "shapes", "--runs-dir", "runs", "--models-dir", "models", "--json"]
    assert main([*argv, *SMALL_FLAGS]) == 0
    held_out = json.loads(capsys.readouterr().out)["test_examples"]

    for _ in range(2):
        assert main(["evaluate", "models/shapes", str(tmp_path / "data"), "--json"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["seen_in_training"] == metrics["examples"] - held_out > 0
    assert (tmp_path / "evaluation" / "shapes-v1" / "report.md").is_file()
    assert (tmp_path / "evaluation" / "shapes-v1-2" / "report.md").is_file(), "the second run must not overwrite"
    assert "are in the train/val split" in caplog.text

    caplog.clear()
    shutil.copytree(tmp_path / "data", tmp_path / "new-images")
    assert main(["evaluate", "models/shapes", "new-images", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["seen_in_training"] == 0
    assert "train/val split" not in caplog.text, "another folder is not known to overlap"


def test_evaluate_rejects_a_folder_without_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    assert main(["evaluate", str(tmp_path), str(tmp_path / "data")]) == 2
    assert "neither a version directory" in capsys.readouterr().err


def test_fine_tune_from_zero_exits_2_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    argv = ["train", str(tmp_path / "data"), "--name", "x", "--fine-tune-epochs", "1", "--fine-tune-from", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--fine-tune-from 0 unfreezes nothing" in err
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_unknown_fine_tune_layer_exits_2_before_phase_1_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.phases as phases
    from training.data.sample import SampleSpec, write_sample

    write_sample(tmp_path / "data", SampleSpec(classes=2, per_class=6, size=36, seed=2))
    phase_1_runs: list[str] = []
    monkeypatch.setattr(phases, "fit_head_on_features", lambda *args, **kwargs: phase_1_runs.append("ran"))
    argv = ["train", str(tmp_path / "data"), "--name", "x", "--runs-dir", str(tmp_path / "runs")]
    argv += ["--models-dir", str(tmp_path / "models"), "--fine-tune-epochs", "1", "--fine-tune-from", "nosuch"]
    argv += ["--json"]  # no progress bars on stderr: only the error line
    assert main([*argv, *SMALL_FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    assert "--fine-tune-from: no layer of the base is named 'nosuch'*" in err
    assert len(err.splitlines()) == 1
    assert phase_1_runs == [], "phase 1 must not train when phase 2 cannot start"
    assert not (tmp_path / "runs").exists(), "no run directory for a run that never started"
