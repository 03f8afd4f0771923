"""Clean output: no TensorFlow C++ lines by default, progress on stderr without ANSI codes, no retracing alarms."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_FLAGS = ["--weights", "none", "--image-size", "32", "--batch-size", "8", "--dense-units", "8"]
TF_CPP_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN custom operations", re.MULTILINE)


def run_tlserve(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tlserve ARGV` as a user runs it from a pipe: no TF_CPP_MIN_LOG_LEVEL preset, output captured."""
    clean = {
        key: value for key, value in os.environ.items() if key not in {"TF_CPP_MIN_LOG_LEVEL", "TLSERVE_LOG_LEVEL"}
    }
    clean.update(PYTHONPATH=str(REPO_ROOT), **(env or {}))
    command = [sys.executable, "-m", "tlserve.cli", *argv]
    return subprocess.run(command, cwd=cwd, env=clean, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    from training.data.sample import SampleSpec, write_sample

    write_sample(tmp_path / "data", SampleSpec(classes=2, per_class=8, size=36, seed=2))
    return tmp_path / "data"


@pytest.mark.slow
def test_train_prints_no_tensorflow_cpp_lines_and_plain_progress_on_stderr(tmp_path: Path, dataset: Path) -> None:
    done = run_tlserve("train", str(dataset), "--name", "pets", "--epochs", "2", *SMALL_FLAGS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not TF_CPP_LINE.search(done.stderr), done.stderr
    for stream in (done.stdout, done.stderr):
        assert "\x1b[" not in stream, "no ANSI codes when the output is not a terminal"
        assert "\r" not in stream, "no carriage-return progress frames when the output is not a terminal"
    assert done.stdout.startswith("published pets version 1"), "stdout holds the result, not progress bars"
    assert re.search(r"^epoch 2/2: .*loss \d", done.stderr, re.MULTILINE), "one plain line per epoch on stderr"


@pytest.mark.slow
def test_verbose_and_tlserve_log_level_bring_tensorflow_lines_back(tmp_path: Path, dataset: Path) -> None:
    argv = ["train", str(dataset), "--name", "pets", "--epochs", "1", *SMALL_FLAGS]
    verbose = run_tlserve("--verbose", *argv, cwd=tmp_path)
    by_env = run_tlserve(*argv, cwd=tmp_path, env={"TLSERVE_LOG_LEVEL": "debug"})
    for done in (verbose, by_env):
        assert done.returncode == 0, done.stderr
        assert TF_CPP_LINE.search(done.stderr), "asked for debug output, TensorFlow's own lines are shown"
        assert " DEBUG " in done.stderr


@pytest.mark.slow
def test_sweep_prints_no_tf_function_warnings(tmp_path: Path, dataset: Path) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(
        f'data = "{dataset}"\nname = "pets"\nweights = "none"\nimage_size = 32\nbatch_size = 8\nepochs = 1\n'
        "dense_units = 8\n[sweep]\nlearning_rate = [0.01, 0.001, 0.0001]\n"
    )
    done = run_tlserve("sweep", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "tf.function retracing" not in done.stderr
    assert not TF_CPP_LINE.search(done.stderr), done.stderr


def test_model_commands_print_nothing_from_tensorflow(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    done = run_tlserve("models", "list", "--models-dir", str(tmp_path / "models"), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
