"""`tlserve sweep`: a grid over the [sweep] table, a comparison sorted by validation accuracy, --publish-best."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tlserve.cli import main
from tlserve.contract import list_versions
from training.config import TrainConfigError
from training.sweep import grid, sweep_configs


def test_grid_is_the_product_of_the_listed_values_in_file_order() -> None:
    points = grid({"head": ["flatten", "gap"], "learning-rate": [0.1, 0.01], "epochs": 3})
    assert points == [
        {"head": "flatten", "learning_rate": 0.1, "epochs": 3},
        {"head": "flatten", "learning_rate": 0.01, "epochs": 3},
        {"head": "gap", "learning_rate": 0.1, "epochs": 3},
        {"head": "gap", "learning_rate": 0.01, "epochs": 3},
    ]


def test_every_grid_point_is_validated_before_anything_runs() -> None:
    with pytest.raises(TrainConfigError, match="--optimizer must be one of"):
        sweep_configs({"sweep": {"optimizer": ["adam", "adagrad"]}}, {}, "sweep.toml")
    with pytest.raises(TrainConfigError, match="unknown key 'layers'"):
        sweep_configs({"sweep": {"layers": [1, 2]}}, {}, "sweep.toml")
    with pytest.raises(TrainConfigError, match=r"\[sweep\] table"):
        sweep_configs({"epochs": 1}, {}, "sweep.toml")
    with pytest.raises(TrainConfigError, match="runs_dir cannot vary"):
        sweep_configs({"sweep": {"runs_dir": ["a", "b"]}}, {}, "sweep.toml")


def test_sweep_file_with_an_unknown_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sweep.toml").write_text('data = "d"\nname = "n"\n[sweep]\nlayers = [1, 2]\n')
    assert main(["sweep", str(tmp_path / "sweep.toml")]) == 2
    assert "unknown key 'layers'" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_compares_runs_by_validation_accuracy_and_publishes_the_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.data.sample import SampleSpec, write_sample

    write_sample(tmp_path / "data", SampleSpec(classes=2, per_class=10, size=36, seed=4))
    config = tmp_path / "sweep.toml"
    config.write_text(
        f'data = "{tmp_path / "data"}"\nname = "swept"\nweights = "none"\nimage_size = 32\n'
        f'batch_size = 8\nepochs = 1\ndense_units = 8\nruns_dir = "{tmp_path / "runs"}"\n'
        "[sweep]\nlearning_rate = [0.01, 0.0001]\n"
    )
    code = main(["sweep", str(config), "--models-dir", str(tmp_path / "models"), "--publish-best", "--json"])
    assert code == 0
    output = json.loads(capsys.readouterr().out)
    runs = output["runs"]
    assert [run["config"] for run in sorted(runs, key=lambda r: r["run"])] == [
        {"learning_rate": 0.01},
        {"learning_rate": 0.0001},
    ]
    assert runs == sorted(runs, key=lambda run: (-run["val_accuracy"], run["run"]))  # ties in grid order: see below
    assert output["published_version"] == 1
    assert list_versions(tmp_path / "models" / "swept") == [1]
    published = json.loads((tmp_path / "models" / "swept" / "1" / "assets.extra" / "metadata.json").read_text())
    assert published["config"]["learning_rate"] == runs[0]["config"]["learning_rate"]
    sweep_dir = Path(output["sweep_dir"])
    with open(sweep_dir / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == [run["run"] for run in runs]
    assert (sweep_dir / "sweep.md").read_text().startswith("| rank | run | val acc")


def test_runs_rank_by_validation_accuracy_ties_in_grid_order_and_unknown_accuracy_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.publish
    import training.train
    from training.config import RunOptions, TrainConfig
    from training.sweep import run_grid

    # run index → (val accuracy, seconds): distinct accuracies out of order, one tie (the later run faster), one None
    outcomes = [(0.5, 1.0), (0.9, 9.0), (None, 0.5), (0.7, 5.0), (0.7, 3.0)]
    configs = [TrainConfig(learning_rate=0.1 * (index + 1)) for index in range(len(outcomes))]

    def fake_train(config: TrainConfig, run: RunOptions, *, progress: bool, base: object = None):
        index = round(config.learning_rate / 0.1) - 1
        run_dir = Path(run.runs_dir) / f"r{index}"
        run_dir.mkdir(parents=True)
        accuracy, seconds = outcomes[index]
        classifier = SimpleNamespace(base=object())
        return SimpleNamespace(
            val_accuracy=accuracy, metrics={}, duration_s=seconds, run_dir=run_dir, classifier=classifier
        )

    monkeypatch.setattr(training.train, "train", fake_train)
    monkeypatch.setattr(training.publish, "export_run", lambda result, export_dir: export_dir)
    rows = run_grid(configs, RunOptions(runs_dir=str(tmp_path / "sweep")), progress=False)
    assert [row["run"] for row in rows] == ["run02", "run04", "run05", "run01", "run03"]
    assert [row["rank"] for row in rows] == [1, 2, 2, 4, 5]
    assert [row["export_dir"] is not None for row in rows] == [True, False, False, False, False]


def test_tied_runs_share_a_rank_in_grid_order_whatever_their_duration() -> None:
    from training.sweep import rank_rows

    rows = [
        {"run": "run01", "val_accuracy": 0.5, "duration_s": 9.0},
        {"run": "run02", "val_accuracy": 0.75, "duration_s": 5.0},
        {"run": "run03", "val_accuracy": 0.5, "duration_s": 1.0},
        {"run": "run04", "val_accuracy": None, "duration_s": 0.5},
    ]
    ranked = rank_rows(rows)
    assert [(row["run"], row["rank"]) for row in ranked] == [("run02", 1), ("run01", 2), ("run03", 2), ("run04", 4)]
