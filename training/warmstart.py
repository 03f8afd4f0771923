"""Warm start: begin a training run from an exported version's weights (how `tlserve retrain` starts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlserve.console import CommandError


@dataclass(frozen=True)
class WarmStart:
    """The version to start from and its class list (a warm start needs the same classes)."""

    version_dir: Path
    classes: list[str]


def restore_weights(model: Any, version_dir: Path) -> None:
    """Load a version's variables into a model of the same architecture (the exported module's `model`)."""
    import tensorflow as tf

    status = tf.train.Checkpoint(model=model).read(str(version_dir / "variables" / "variables"))
    try:
        status.assert_existing_objects_matched()
    except AssertionError as exc:
        raise CommandError(f"cannot warm-start from {version_dir}: architecture differs ({exc})") from None
    status.expect_partial()
