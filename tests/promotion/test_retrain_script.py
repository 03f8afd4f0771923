"""scripts/retrain_and_promote.sh: the flags it passes, its exit codes, and its guard against overlapping runs."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "retrain_and_promote.sh"


def fake_tlserve(tmp_path: Path, exit_code: int) -> Path:
    """A stand-in for `tlserve` that records its arguments and exits as told (no training in these tests)."""
    stub = tmp_path / "tlserve"
    stub.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/args"\nexit {exit_code}\n')
    stub.chmod(0o755)
    return stub


def run_script(tmp_path: Path, stub: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TLSERVE_DATA_DIR": str(tmp_path / "data"),
        "TLSERVE_MODEL_NAME": "shapes",
        "TLSERVE_MODELS_DIR": str(tmp_path / "models"),
        "TLSERVE_OFFLINE": "1",
        "TLSERVE_TLSERVE": str(stub),
    }
    return subprocess.run(["bash", str(SCRIPT), *extra], env=env, capture_output=True, text=True, timeout=60)


def test_script_runs_retrain_with_promotion_and_retention(tmp_path: Path) -> None:
    result = run_script(tmp_path, fake_tlserve(tmp_path, 0), "--epochs", "3")

    assert result.returncode == 0, result.stderr
    args = (tmp_path / "args").read_text().split()
    assert args[:6] == ["retrain", str(tmp_path / "data"), "--name", "shapes", "--models-dir", str(tmp_path / "models")]
    assert args[6:] == ["--promote-if-better", "--keep", "5", "--offline", "--epochs", "3"]


def test_script_passes_on_the_kept_back_exit_code(tmp_path: Path) -> None:
    result = run_script(tmp_path, fake_tlserve(tmp_path, 1))

    assert result.returncode == 1
    assert "candidate kept back by a gate" in result.stderr


def test_overlapping_run_exits_75_without_retraining(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with open(tmp_path / "models" / ".retrain.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_script(tmp_path, fake_tlserve(tmp_path, 0))

    assert result.returncode == 75
    assert "another retrain" in result.stderr
    assert not (tmp_path / "args").exists()


def test_script_passes_a_command_line_the_real_cli_parses_as_intended(tmp_path: Path) -> None:
    from promotion import cli
    from tlserve.cli import build_parser

    stub = tmp_path / "tlserve"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\n')  # one argument per line
    stub.chmod(0o755)
    result = run_script(tmp_path, stub, "--epochs", "3", "--min-class-recall", "0.7")
    assert result.returncode == 0, result.stderr

    argv = (tmp_path / "argv").read_text().splitlines()
    args = build_parser().parse_args(argv)  # exits (SystemExit 2) on any flag tlserve does not know

    assert args.handler is cli._retrain
    assert (args.data, args.name, args.models_dir) == (tmp_path / "data", "shapes", tmp_path / "models")
    assert (args.promote_if_better, args.keep, args.offline) == (True, 5, True)
    assert (args.epochs, args.min_class_recall) == (3, 0.7)
