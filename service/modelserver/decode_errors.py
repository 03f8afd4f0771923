"""One-line answers for decode and shape failures: name the image and the problem, never TensorFlow's graph text.

TensorFlow reports a bad image as "Graph execution error: Detected at node ... defined at (most recent call last):"
followed by Python frames and node names. Clients get `image 2 cannot be decoded: <reason>` instead.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping

import numpy as np

from service.modelserver.errors import InvalidArgument
from tlserve.contract import INPUT_BYTES

_NODE_TAIL = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\].*$|\s*\[Op:[^\]]*\]\s*$")
_GRAPH_NOISE = ("Graph execution error", "Detected at node", "defined at (most recent call last)")


def one_line(message: str) -> str:
    """The reason inside a TensorFlow message: no traceback frames, node names or op tails."""
    lines = [line.strip() for line in message.splitlines()]
    if any(line.startswith(_GRAPH_NOISE) for line in lines):
        # The reason is the last non-frame line; frames are indented `File "...", line N` and node listings.
        reasons = [line for line in lines if line and not _is_frame(line)]
        lines = reasons[-1:] or ["the model could not run on this input"]
    first = next((line for line in lines if line), "")
    return _NODE_TAIL.sub("", first).strip() or "the model could not run on this input"


def _is_frame(line: str) -> bool:
    return line.startswith(_GRAPH_NOISE) or line.startswith(("File ", "[[", "Node:", "Op:")) or line.endswith(":")


def zero_rows_check(inputs: Mapping[str, np.ndarray]) -> None:
    """A tensor with no rows reaches deep into the graph before failing; say so up front."""
    for alias, value in sorted(inputs.items()):
        if value.ndim >= 1 and value.shape[0] == 0:
            raise InvalidArgument(f"input {alias} has 0 rows; send at least one image")


def bad_image(inputs: Mapping[str, np.ndarray]) -> str | None:
    """`image N cannot be decoded: reason` for the first encoded image PIL cannot fully decode, if any."""
    from PIL import Image

    value = inputs.get(INPUT_BYTES)
    if value is None or value.dtype != object:
        return None
    for index, data in enumerate(value.reshape(-1)):
        try:
            with Image.open(io.BytesIO(bytes(data))) as image:
                image.load()
        except Exception as exc:  # PIL signals bad data with many exception types
            return f"image {index} cannot be decoded: {one_line(str(exc)) or type(exc).__name__}"
    return None


def explain_invalid_argument(inputs: Mapping[str, np.ndarray], error: InvalidArgument) -> InvalidArgument:
    """The failed request's culprit image when one can be found, else TensorFlow's reason on one line."""
    culprit = bad_image(inputs)
    if culprit is not None:
        return InvalidArgument(culprit)
    return InvalidArgument(one_line(error.message))
