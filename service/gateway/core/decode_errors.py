"""Model-server decode failures in plain words: which image, what is wrong with it — never TensorFlow internals.

A model that cannot decode an image answers INVALID_ARGUMENT with TensorFlow's text, e.g. `Graph execution error:
Detected at node map/while/decode_image/DecodeImage defined at ... Invalid PNG data, size 6210 [[{{node ...}}]]
[Op:__inference_...]`. `describe_decode_failure` turns that into `its PNG data is truncated or corrupt`;
`strip_tf_internals` keeps only the human part of any other TensorFlow message. The embedded model server already
words it `image 0 cannot be decoded: <PIL's reason>`; its index counts within its own call, and the gateway names
the image itself (`image 2 (cat.png) could not be decoded: ...`), so only the reason is kept.
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
_MODEL_SERVER_PREFIX = re.compile(r"^image \d+ cannot be decoded:\s*")  # service/modelserver/decode_errors.py

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
        re.compile(
            r"Invalid (PNG|JPEG|GIF|BMP|WebP) data|Uncompress failed|Premature end|truncated|corrupt"
            r"|broken data stream",  # the last one is PIL's, in the embedded model server's wording
            re.I,
        ),
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
    """What is wrong with an image the model could not decode, from the model server's message (without its
    own `image N cannot be decoded:` prefix: the caller names the image)."""
    shown = image_format if image_format in SUPPORTED_FORMATS else "image"
    for pattern, reason in _REASONS:
        if pattern.search(message):
            return reason.format(format=shown)
    own_words = _MODEL_SERVER_PREFIX.match(message)
    if own_words:
        return f"its {shown} data is unreadable ({strip_tf_internals(message[own_words.end() :])})"
    return f"its {shown} data is unreadable (truncated, corrupt or an unsupported variant)"
