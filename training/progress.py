"""Training progress on stderr (stdout carries only results): a bar on a terminal, plain lines otherwise.

Keras' own bars write to stdout with ANSI colours even when redirected, so `--json`/pipes and log files
would get them; fit and predict therefore run with `verbose=0` and this callback instead.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import keras
from tqdm import tqdm


class StderrProgress(keras.callbacks.Callback):  # type: ignore[misc]
    """Per-epoch progress for fit (or one pass of predict): tqdm on a terminal, one plain line when not."""

    def __init__(self, description: str = "", stream: TextIO | None = None) -> None:
        super().__init__()
        self.description = description
        self.stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        self._epoch = 0
        self._epochs = 0

    @property
    def interactive(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._epochs = int(self.params.get("epochs") or 0)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch + 1
        self._open(f"{self.description}epoch {self._epoch}/{self._epochs}")

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._advance()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._close()
        if not self.interactive:
            print(f"{self.description}epoch {self._epoch}/{self._epochs}: {format_logs(logs)}", file=self.stream)
        elif logs:
            self.stream.write(f"  {format_logs(logs)}\n")

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._open(self.description.strip() or "predicting")

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._advance()

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        self._close()

    def _open(self, description: str) -> None:
        if self.interactive:
            self._bar = tqdm(total=self.params.get("steps"), desc=description, unit="batch", file=self.stream)

    def _advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_logs(logs: dict[str, Any] | None) -> str:
    """`loss 0.6908 accuracy 0.6667 val_loss 0.7547` (learning rate and other non-metrics left out)."""
    shown = {key: value for key, value in (logs or {}).items() if key != "learning_rate"}
    return " ".join(f"{key} {float(value):.4f}" for key, value in shown.items()) or "done"
