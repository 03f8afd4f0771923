"""Atomic publication: racing publishers get distinct versions; a killed export never becomes visible."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tlserve.contract import list_versions
from training.repository import STAGING_PREFIX, new_staging_dir, publish_version, remove_stale_staging

ROOT = Path(__file__).resolve().parents[2]


def staged_copy(exported_version: Path, model_dir: Path) -> Path:
    staged = new_staging_dir(model_dir)
    shutil.copytree(exported_version, staged, dirs_exist_ok=True)
    return staged


def test_racing_threads_each_get_their_own_version(exported_version: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    staged = [staged_copy(exported_version, model_dir) for _ in range(6)]
    barrier = threading.Barrier(len(staged))
    versions: list[int] = []

    def publish(path: Path) -> None:
        barrier.wait()
        versions.append(publish_version(path, model_dir))

    threads = [threading.Thread(target=publish, args=(path,)) for path in staged]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]
    assert list_versions(model_dir) == [1, 2, 3, 4, 5, 6]
    assert all((model_dir / str(v) / "saved_model.pb").is_file() for v in versions)


_PUBLISHER = """
import sys
from pathlib import Path
from training.repository import publish_version
staged, model_dir = Path(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()  # released together with the other publishers, once every one of them is ready
print(publish_version(staged, model_dir))
"""


def test_racing_processes_each_get_their_own_version(exported_version: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    staged = [staged_copy(exported_version, model_dir) for _ in range(3)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _PUBLISHER, str(path), str(model_dir)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for path in staged
    ]
    try:
        # Imports done in all three before any publishes, so they really rename at (nearly) the same moment.
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in processes:
            assert process.wait(timeout=60) == 0
        versions = sorted(int(process.stdout.read()) for process in processes if process.stdout is not None)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
    assert versions == [1, 2, 3]
    assert list_versions(model_dir) == [1, 2, 3]


def test_publish_never_overwrites_an_existing_version(exported_version: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "keep.txt").write_text("old")
    assert publish_version(staged_copy(exported_version, model_dir), model_dir) == 2
    assert (model_dir / "1" / "keep.txt").read_text() == "old"


_SLOW_EXPORT = """
import sys
from pathlib import Path
import keras
import training.export as export
from training.repository import new_staging_dir, publish_version

def hang(*args):  # SavedModel written, labels/metadata not yet: the test kills us here
    sys.stdout.write("midway\\n"); sys.stdout.flush()
    sys.stdin.readline()

export.write_labels = hang
model_dir = Path(sys.argv[1])
inputs = keras.Input((32, 32, 3))
model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
staged = new_staging_dir(model_dir)
export.export_saved_model(model, export.ExportSpec(classes=("a", "b"), image_size=32, base="vgg16"), staged)
publish_version(staged, model_dir)
"""


def test_killed_export_leaves_no_visible_version(tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    with subprocess.Popen(
        [sys.executable, "-c", _SLOW_EXPORT, str(model_dir)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "midway"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    leftovers = [p.name for p in model_dir.iterdir() if p.name.startswith(STAGING_PREFIX) and p.is_dir()]
    assert len(leftovers) == 1, "the half-written export is still there..."
    assert (model_dir / leftovers[0] / "saved_model.pb").is_file()
    assert list_versions(model_dir) == [], "...but no version scan can see it"
    assert remove_stale_staging(model_dir) != []  # its writer is gone: no age needed
    assert not any(p.name.startswith(STAGING_PREFIX) for p in model_dir.iterdir())


def test_failed_publish_run_cleans_its_staging_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.publish as publish

    def broken_export(result: object, out_dir: Path) -> Path:
        (out_dir / "saved_model.pb").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(publish, "export_run", broken_export)
    with pytest.raises(OSError, match="disk full"):
        publish.publish_run(object(), tmp_path, "demo")  # type: ignore[arg-type]
    assert list(p.name for p in (tmp_path / "demo").iterdir() if not p.name.startswith(".publish")) == []
