"""The persistent feature store: keys by content × base identity, write-once atomic entries, reuse across runs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from training.config import RunOptions, TrainConfig, build_run
from training.feature_store import FeatureStore, base_identity, entry_key, store_path


def test_key_changes_with_content_base_size_and_view() -> None:
    identity = base_identity("vgg16", [np.zeros((2, 2), np.float32)])
    key = entry_key("a" * 64, identity, 32)
    assert key != entry_key("b" * 64, identity, 32)
    assert key != entry_key("a" * 64, identity, 64)
    assert key != entry_key("a" * 64, identity, 32, view=1)
    assert key != entry_key("a" * 64, base_identity("vgg16", [np.ones((2, 2), np.float32)]), 32)
    assert key != entry_key("a" * 64, base_identity("resnet50", [np.zeros((2, 2), np.float32)]), 32)


def test_put_then_get_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    features = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.put("ab" + "0" * 62, features)
    np.testing.assert_array_equal(store.get("ab" + "0" * 62), features)
    assert [p.name for p in (tmp_path / "ab").iterdir()] == ["ab" + "0" * 62 + ".npy"]


def test_a_store_folder_removed_during_a_run_is_made_again_on_the_next_write(tmp_path: Path) -> None:
    import shutil

    store = FeatureStore(tmp_path / "store")
    store.put("ab" + "0" * 62, np.zeros(4, np.float32))
    shutil.rmtree(tmp_path / "store")  # e.g. `rm -rf runs/.features` while a sweep is running
    store.put("ab" + "1" * 62, np.ones(4, np.float32))
    np.testing.assert_array_equal(store.get("ab" + "1" * 62), np.ones(4, np.float32))


def test_store_path_prefers_flag_then_env_then_runs_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TLSERVE_FEATURE_STORE", raising=False)
    assert store_path("", "runs") == Path("runs/.features")
    monkeypatch.setenv("TLSERVE_FEATURE_STORE", "/env/store")
    assert store_path("", "runs") == Path("/env/store")
    assert store_path("/flag", "runs") == Path("/flag")


def test_a_write_killed_midway_leaves_no_readable_entry(tmp_path: Path) -> None:
    """kill -9 while a large entry is being written: afterwards the key is absent, never half-present."""
    key = "cd" + "1" * 62
    script = textwrap.dedent(
        f"""
        import numpy as np, sys
        from training.feature_store import FeatureStore
        sys.stdout.write("go\\n"); sys.stdout.flush()
        while True:
            FeatureStore({str(tmp_path)!r}).put({key!r}, np.ones((4000, 4000), np.float32))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None
    assert process.stdout.readline() == b"go\n"
    store = FeatureStore(tmp_path)
    for _ in range(200):  # wait until a temporary file (a write in progress) exists, then kill
        if list(tmp_path.glob("cd/.tmp-*")):
            break
        import time

        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    if store.has(key):  # an earlier complete write may have landed: it must then be whole
        assert store.get(key).shape == (4000, 4000)
    assert store.entries() in ([], [store.path_of(key)])  # a leftover temporary file is never an entry
    assert not store.has("cd" + "2" * 62)


def _sample(root: Path, per_class: int = 10, seed: int = 1) -> Path:
    from training.data.sample import SampleSpec, write_sample

    write_sample(root, SampleSpec(classes=2, per_class=per_class, size=40, seed=seed))
    return root


def _config(data: Path, runs: Path, store: Path, **changes: object) -> tuple[TrainConfig, RunOptions]:
    """(hyper-parameters, run options) of a seconds-long run on `data` with its own store."""
    values: dict[str, object] = dict(
        data=str(data),
        name="store",
        weights="none",
        image_size=32,
        batch_size=8,
        epochs=1,
        dense_units=8,
        runs_dir=str(runs),
        feature_store=str(store),
        seed=3,
    )
    values.update(changes)
    return build_run({}, values)


@pytest.mark.slow
def test_second_run_reuses_every_feature_and_learns_the_same_head(tmp_path: Path) -> None:
    from training.train import train

    data = _sample(tmp_path / "data")
    store = tmp_path / "store"
    first = train(*_config(data, tmp_path / "runs", store, learning_rate=1e-3), progress=False)
    used = first.features["reused"] + first.features["computed"]
    assert first.features == {"reused": 0, "computed": used}
    assert used > 0
    second = train(*_config(data, tmp_path / "runs", store, learning_rate=1e-3), progress=False)
    assert second.features == {"reused": used, "computed": 0}
    for a, b in zip(first.classifier.head.get_weights(), second.classifier.head.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    other_seed = train(*_config(data, tmp_path / "runs", store, seed=4), progress=False)
    assert other_seed.features["reused"] == 0  # another random base init is another base: nothing stale reused


@pytest.mark.slow
def test_new_files_compute_only_themselves_and_a_rewritten_file_is_not_read_stale(tmp_path: Path) -> None:
    from training.train import train

    data = _sample(tmp_path / "data", per_class=20)
    store = tmp_path / "store"
    config = _config(data, tmp_path / "runs", store, val_fraction=0.0, test_fraction=0.0)
    first = train(*config, progress=False)
    assert first.features == {"reused": 0, "computed": 40}
    extra = sorted(_sample(tmp_path / "extra", per_class=2, seed=9).glob("*/*.*"))
    classes = sorted(path.name for path in data.iterdir() if path.is_dir())
    shutil.copy(extra[0], data / classes[0] / f"new-{extra[0].name}")
    shutil.copy(extra[1], data / classes[1] / f"new-{extra[1].name}")
    victim = sorted((data / classes[0]).iterdir())[0]
    victim.write_bytes(extra[2].read_bytes())  # same file name, new content
    again = train(*config, progress=False)
    assert again.features == {"reused": 39, "computed": 3}


@pytest.mark.slow
def test_two_concurrent_runs_on_one_store_both_succeed_and_agree(tmp_path: Path) -> None:
    data = _sample(tmp_path / "data")
    store = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    command = [
        sys.executable, "-m", "tlserve", "train", str(data), "--name", "c", "--weights", "none",
        "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--dense-units", "8", "--seed", "3",
        "--feature-store", str(store), "--json",
    ]  # fmt: skip
    runs = [
        subprocess.Popen(
            [*command, "--models-dir", str(tmp_path / f"models{i}"), "--runs-dir", str(tmp_path / f"runs{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for i in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    import json

    summaries = [json.loads(out) for out, _ in outputs]
    totals = {s["features"]["reused"] + s["features"]["computed"] for s in summaries}
    assert len(totals) == 1
    entries = FeatureStore(store).entries()
    # train + val (counted) and the test split (evaluated through the head on stored features): each image once
    assert len(entries) == len(list(data.glob("*/*.*"))) > totals.pop()
    assert not list(store.glob("*/.tmp-*"))
    third = subprocess.run(
        [*command, "--models-dir", str(tmp_path / "models3"), "--runs-dir", str(tmp_path / "runs3")],
        capture_output=True,
        env=env,
        check=True,
    )
    assert json.loads(third.stdout)["features"]["computed"] == 0


def test_features_ls_counts_per_partition_and_prune_removes_oldest_first(tmp_path: Path, capsys) -> None:
    from tlserve.cli import main

    store = FeatureStore(tmp_path)
    part = store.partition("vgg16", "f" * 64, 32)
    for index in range(3):
        key = f"{index:02d}" + "0" * 62
        part.put(key, np.zeros(250, np.float32))  # 1,128 bytes each on disk
        os.utime(part.path_of(key), (1000 + index, 1000 + index))
    assert main(["features", "ls", "--feature-store", str(tmp_path), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["partitions"] == [{"partition": "vgg16-32px-ffffffffffffffff", "entries": 3, "bytes": 3 * 1128}]
    assert main(["features", "prune", "--feature-store", str(tmp_path), "--max-mb", str(2 * 1128 / 1e6)]) == 0
    assert [path.name[:2] for path in store.entries()] == ["01", "02"]
    assert main(["features", "prune", "--feature-store", str(tmp_path), "--older-than-days", "1"]) == 0
    assert store.entries() == []


@pytest.mark.slow
def test_augmented_phase_1_trains_on_k_stored_views_computed_once(tmp_path: Path) -> None:
    from training.train import train

    data = _sample(tmp_path / "data", per_class=20)
    store = tmp_path / "store"
    config = _config(data, tmp_path / "runs", store, augment=True, augment_views=3, val_fraction=0.0, test_fraction=0.0)
    first = train(*config, progress=False)
    assert first.features == {"reused": 0, "computed": 3 * 40}
    again = train(*config, progress=False)
    assert again.features == {"reused": 3 * 40, "computed": 0}
    for a, b in zip(first.classifier.head.get_weights(), again.classifier.head.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)  # the same seed draws the same view per image and epoch
    other = train(*_config(data, tmp_path / "runs", store, augment=True, augment_views=3, rotation=0.2,
                          val_fraction=0.0, test_fraction=0.0), progress=False)  # fmt: skip
    assert other.features == {"reused": 0, "computed": 3 * 40}, "other augmentation settings, other views"


@pytest.mark.slow
def test_evaluation_through_the_head_on_stored_features_equals_the_whole_model(tmp_path: Path) -> None:
    from training.data import scan_dataset
    from training.phases import open_feature_source
    from training.train import predict_split, train

    data = _sample(tmp_path / "data")
    result = train(*_config(data, tmp_path / "runs", tmp_path / "store"), progress=False)
    source = open_feature_source(result.classifier, result.config, result.run)
    records = scan_dataset(data, progress=False).records
    stored, stored_labels = predict_split(result.classifier, result.config, records, 2, source)
    whole, whole_labels = predict_split(result.classifier, result.config, records, 2, None)
    assert stored.shape == (len(records), 2)
    np.testing.assert_array_equal(stored_labels, whole_labels)
    np.testing.assert_allclose(stored, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_sweep_builds_the_base_once_computes_features_once_and_exports_only_the_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.model
    from training.sweep import run_grid

    data = _sample(tmp_path / "data")
    built: list[str] = []
    load_base = training.model.load_base
    monkeypatch.setattr(training.model, "load_base", lambda config: built.append(config.base) or load_base(config))
    pairs = [_config(data, tmp_path / "runs", tmp_path / "store", learning_rate=rate) for rate in (1e-2, 1e-3, 1e-4)]
    configs, run = [config for config, _ in pairs], pairs[0][1]
    rows = run_grid(configs, dataclasses.replace(run, runs_dir=str(tmp_path / "sweep")), progress=False)
    by_run = {row["run"]: row for row in rows}
    used = by_run["run01"]["features"]["computed"]
    assert used > 0
    assert by_run["run01"]["features"] == {"reused": 0, "computed": used}
    assert by_run["run02"]["features"] == by_run["run03"]["features"] == {"reused": used, "computed": 0}
    assert built == ["vgg16"]
    assert [row["export_dir"] is not None for row in rows] == [True, False, False]
    assert (Path(rows[0]["export_dir"]) / "saved_model.pb").is_file()
    all_run = dataclasses.replace(run, runs_dir=str(tmp_path / "sweep-all"))
    everything = run_grid(configs[:2], all_run, progress=False, export_all=True)
    assert all((Path(row["export_dir"]) / "saved_model.pb").is_file() for row in everything)


@pytest.mark.slow
def test_a_shared_base_gives_the_same_head_as_a_base_built_for_the_run(tmp_path: Path) -> None:
    from training.train import train

    data = _sample(tmp_path / "data")
    config = _config(data, tmp_path / "runs", tmp_path / "store")
    alone = train(*config, progress=False)
    shared = train(*config, progress=False, base=train(*config, progress=False).classifier.base)
    for a, b in zip(alone.classifier.head.get_weights(), shared.classifier.head.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_a_view_is_the_same_whichever_run_computed_it_and_views_differ(tmp_path: Path) -> None:
    from training.train import train

    data = _sample(tmp_path / "data")
    runs, settings = tmp_path / "runs", dict(augment=True, val_fraction=0.0, test_fraction=0.0)
    train(*_config(data, runs, tmp_path / "at-once", augment_views=2, **settings), progress=False)
    train(*_config(data, runs, tmp_path / "one-by-one", augment_views=1, **settings), progress=False)
    grown = train(*_config(data, runs, tmp_path / "one-by-one", augment_views=2, **settings), progress=False)
    assert grown.features == {"reused": 20, "computed": 20}
    at_once = FeatureStore(tmp_path / "at-once").entries()
    one_by_one = FeatureStore(tmp_path / "one-by-one").entries()
    relative = [path.relative_to(tmp_path / "one-by-one") for path in one_by_one]
    assert [path.relative_to(tmp_path / "at-once") for path in at_once] == relative
    for a, b in zip(at_once, one_by_one, strict=True):
        np.testing.assert_allclose(np.load(a), np.load(b), atol=1e-5)
    assert len({np.load(path).tobytes() for path in one_by_one}) == 40  # view 2 is no copy of view 1
