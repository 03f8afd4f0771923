"""Model-server decode failures in plain words: which image, what is wrong with it — never TensorFlow internals.

A model that cannot decode an image answers INVALID_ARGUMENT with TensorFlow's text, e.g. `Graph execution error:
Detected at node map/while/decode_image/DecodeImage defined at ... Invalid PNG data, size 6210 [[{{node ...}}]]
[Op:__inference_...]`. `describe_decode_failure` turns that into `its PNG data is truncated or corrupt`;
`strip_tf_internals` keeps only the human part of any other TensorFlow message.
"""

from __future__ import annotations

import re

from tlserve.contract import SUPPORTED_FORMATS

_NODE_SUFFIX = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]")
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]")
_DETECTED_AT = re.compile(
    r"Detected at node .*?defined at \(most recent call last\):\n(?:\s*File [^\n]*\n|\s*\n)*", re.S
)
_GRAPH_ERROR = re.compile(r"^\s*Graph execution error:\s*")

# (pattern in TensorFlow's decoder message, plain reason; {format} is the image's format from its header).
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"Number of channels inherent in the image must be 1, 3 or 4", re.I),
        "its number of colour channels is not 1, 3 or 4",
    ),
    (
        re.compile(r"Unknown image file format|not a (JPEG|PNG|GIF|BMP)", re.I),
        "it is not a JPEG, PNG, BMP, GIF or WebP image",
    ),
    (
        re.compile(r"Invalid (PNG|JPEG|GIF|BMP|WebP) data|Uncompress failed|Premature end|truncated|corrupt", re.I),
        "its {format} data is truncated or corrupt",
    ),
)


def strip_tf_internals(message: str) -> str:
    """TensorFlow's op message without graph nodes, Python frames and `[Op:...]` suffixes."""
    text = _GRAPH_ERROR.sub("", message)
    text = _DETECTED_AT.sub("", text)
    text = _OP_SUFFIX.sub("", _NODE_SUFFIX.sub("", text))
    return " ".join(text.split()) or "the model server refused the request"


def describe_decode_failure(message: str, image_format: str | None) -> str:
    """What is wrong with an image the model could not decode, from the model server's message."""
    shown = image_format if image_format in SUPPORTED_FORMATS else "image"
    for pattern, reason in _REASONS:
        if pattern.search(message):
            return reason.format(format=shown)
    return f"its {shown} data could not be decoded (truncated, corrupt or an unsupported variant)"
