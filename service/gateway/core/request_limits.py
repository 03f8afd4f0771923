"""Limits the gateway checks at its edge before anything goes upstream: identifier lengths and the decoded-pixel budget.

A 20,000-character model name used to come back from upstream inside a gRPC status whose trailer broke gRPC's
metadata limit (RESOURCE_EXHAUSTED, so 429 "overloaded"); names are now refused here, and never echoed in full.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from service.gateway.errors import BadRequest, NotFound, PayloadTooLarge

# A model is a directory in the repository and a label a key in models.config: 255 is a file name's limit.
MAX_IDENTIFIER_CHARS = 255
SHOWN_CHARS = 40
# Same default as the model server's (service/modelserver/pixel_budget.py): 64 one-megapixel photos per request.
DEFAULT_MAX_REQUEST_PIXELS = 64_000_000


def shorten(text: str) -> str:
    """A client-supplied string fit for an error message: its start and its length."""
    if len(text) <= SHOWN_CHARS:
        return repr(text)
    return f"{text[:SHOWN_CHARS]!r}... ({len(text)} characters)"


def check_model_name(name: str) -> None:
    if len(name) > MAX_IDENTIFIER_CHARS:
        raise NotFound(f"model name {shorten(name)} is longer than {MAX_IDENTIFIER_CHARS} characters: no such model")


def check_label(label: str) -> None:
    if len(label) > MAX_IDENTIFIER_CHARS:
        raise NotFound(
            f"version label {shorten(label)} is longer than {MAX_IDENTIFIER_CHARS} characters: no such label"
        )


def check_identifiers(what: str, names: Iterable[str]) -> None:
    """Signature, input and output names: a 400 naming the field, not a 404 (the model exists)."""
    for name in names:
        if len(name) > MAX_IDENTIFIER_CHARS:
            raise BadRequest(f"{what} {shorten(name)} is longer than {MAX_IDENTIFIER_CHARS} characters")


def check_model_spec(spec: Any) -> None:
    """A ModelSpec's name, label and signature name, as TF Serving clients send them over gRPC."""
    check_model_name(spec.name)
    if spec.WhichOneof("version_choice") == "version_label":
        check_label(spec.version_label)
    check_identifiers("signature name", [spec.signature_name])


def check_predict_names(request: Any) -> None:
    """Everything a PredictRequest names that upstream might echo back."""
    check_model_spec(request.model_spec)
    check_identifiers("input name", request.inputs.keys())
    check_identifiers("output name", request.output_filter)


def check_request_pixels(pixel_counts: Iterable[int], max_request_pixels: int) -> None:
    """The sum of what every image decodes to (from headers or shapes) stays within the per-request budget."""
    total = sum(pixel_counts)
    if total > max_request_pixels:
        raise PayloadTooLarge(
            f"the request's images decode to {total} pixels, more than the per-request budget of "
            f"{max_request_pixels}; send fewer or smaller images"
        )


def tensor_pixels(shape: list[int]) -> int:
    """Pixels of an already-decoded [N, H, W, 3] tensor: everything but the channel dimension."""
    return math.prod(shape[:-1]) if len(shape) >= 2 else 0
