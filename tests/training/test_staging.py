"""Staging directories left by killed writers are collected (by the next publish and `tlserve models gc`), while a
live writer's directory is never touched — checked with real writer processes, killed with SIGKILL or still running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tlserve.contract import list_versions
from training.repository import new_staging_dir, publish_version
from training.staging import LOCK_SUFFIX, STAGING_PREFIX, collect_garbage, lock_path, remove_stale_staging

ROOT = Path(__file__).resolve().parents[2]
# A writer: stages a directory with a file in it, says where, then publishes it when told to (or is killed first).
WRITER = """
import sys
from pathlib import Path
from training.repository import new_staging_dir, publish_version

model_dir = Path(sys.argv[1])
staged = new_staging_dir(model_dir)
(staged / "saved_model.pb").write_bytes(b"x" * 1000)
print(staged, flush=True)
if sys.stdin.readline().strip() == "publish":
    (staged / "more.bin").write_bytes(b"y" * 10)
    print(publish_version(staged, model_dir), flush=True)
"""


class Writer:
    def __init__(self, process: subprocess.Popen[str], staged: Path) -> None:
        self.process, self.staged = process, staged

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def publish(self) -> int:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("publish\n")
        self.process.stdin.flush()
        version = int(self.process.stdout.readline())
        assert self.process.wait(timeout=30) == 0
        return version


@contextmanager
def writer(model_dir: Path) -> Iterator[Writer]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", WRITER, str(model_dir)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None
        staged = Path(process.stdout.readline().strip())
        assert staged.is_dir()
        try:
            yield Writer(process, staged)
        finally:
            if process.poll() is None:
                process.kill()


def staging_entries(model_dir: Path) -> list[str]:
    return sorted(entry.name for entry in model_dir.iterdir() if entry.name.startswith(STAGING_PREFIX))


def test_gc_removes_a_killed_writers_staging_dir_and_keeps_a_live_writers(tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    with writer(model_dir) as dead, writer(model_dir) as live:
        dead.kill()
        removed = remove_stale_staging(model_dir)
        assert [item.path for item in removed] == [dead.staged]
        assert removed[0].size_bytes == 1000
        assert not dead.staged.exists()
        assert not lock_path(dead.staged).exists()
        assert staging_entries(model_dir) == sorted([live.staged.name, live.staged.name + LOCK_SUFFIX])
        # The live writer never noticed: it finishes and publishes its whole directory.
        assert live.publish() == 1
    assert sorted(path.name for path in (model_dir / "1").iterdir()) == ["more.bin", "saved_model.pb"]
    assert staging_entries(model_dir) == []


def test_the_next_publish_removes_a_killed_writers_staging_dir(tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    with writer(model_dir) as dead:
        dead.kill()
    assert dead.staged.is_dir()
    staged = new_staging_dir(model_dir)
    (staged / "saved_model.pb").write_bytes(b"model")
    assert publish_version(staged, model_dir) == 1
    assert staging_entries(model_dir) == []
    assert list_versions(model_dir) == [1]


def test_gc_keeps_a_staging_dir_this_process_is_writing(tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    staged = new_staging_dir(model_dir)
    assert remove_stale_staging(model_dir) == []
    assert staged.is_dir()
    assert publish_version(staged, model_dir) == 1


def test_lockless_staging_dirs_of_older_versions_are_removed_once_old(tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    legacy = model_dir / f"{STAGING_PREFIX}legacy"
    legacy.mkdir(parents=True)
    assert remove_stale_staging(model_dir) == []
    hours_ago = time.time() - 2 * 3600
    os.utime(legacy, (hours_ago, hours_ago))
    assert [item.path for item in remove_stale_staging(model_dir)] == [legacy]
    assert not legacy.exists()


def test_an_orphaned_lock_file_of_a_dead_writer_is_removed(tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    model_dir.mkdir()
    orphan = model_dir / f"{STAGING_PREFIX}gone{LOCK_SUFFIX}"
    orphan.write_text("")
    assert [item.path.name for item in remove_stale_staging(model_dir)] == [f"{STAGING_PREFIX}gone"]
    assert not orphan.exists()


def test_models_gc_command_frees_a_killed_writers_staging_dir_in_every_model(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    with writer(models_dir / "cats") as dead, writer(models_dir / "dogs") as live:
        dead.kill()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "tlserve", "models", "gc", "--models-dir", str(models_dir), "--json"]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        expected = {"removed": [{"path": str(dead.staged), "bytes": 1000}], "freed_bytes": 1000}
        assert json.loads(result.stdout) == expected
        assert live.staged.is_dir()
        assert collect_garbage(models_dir) == []
