"""Bounds on decoded pixels, read from image headers before TensorFlow decodes anything.

A few MB of highly compressible PNGs decode to GBs of RGB tensors (issue 12): the per-request budget refuses such a
request from its headers alone, and `InflightPixels` bounds what concurrent requests may decode at once.
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from service.modelserver.errors import InvalidArgument, ResourceExhausted
from tlserve.contract import INPUT_BYTES, INPUT_PIXELS, SUPPORTED_FORMATS

# 64 Mpx: 64 one-megapixel photos (the gateway's images-per-request limit) or five 12 Mpx phone photos per request.
# Measured (bench/edge_bench.py, docs/BENCHMARKS.md): ~1-2 bytes of peak RSS per decoded pixel, so <= ~130 MB.
DEFAULT_MAX_REQUEST_PIXELS = 64_000_000
DEFAULT_MAX_INFLIGHT_PIXELS = 4 * DEFAULT_MAX_REQUEST_PIXELS
_SUPPORTED = f"one of {', '.join(sorted(SUPPORTED_FORMATS))} is"


def image_pixels(data: bytes, index: int) -> int:
    """Pixels (times frames, for animations) the graph would decode from one encoded image, from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image_format = image.format or ""
                frames = int(getattr(image, "n_frames", 1))
                pixels = int(image.width) * int(image.height) * max(frames, 1)
    except (UnidentifiedImageError, Image.DecompressionBombError):
        if not data:
            raise InvalidArgument(f"image {index} is empty") from None
        raise InvalidArgument(f"image {index} is not a recognisable image file; {_SUPPORTED} required") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidArgument(f"image {index} has an unreadable header: {exc}") from None
    if image_format not in SUPPORTED_FORMATS:
        raise InvalidArgument(f"image {index} is {image_format or 'of unknown format'}; {_SUPPORTED} required")
    return pixels


def request_pixels(inputs: Mapping[str, np.ndarray]) -> int:
    """Decoded pixels a request asks for: headers of encoded images, the shape of an already-decoded tensor."""
    total = 0
    for alias, value in inputs.items():
        if alias == INPUT_BYTES and value.dtype == object:
            total += sum(image_pixels(bytes(item), index) for index, item in enumerate(value.reshape(-1)))
        elif alias == INPUT_PIXELS and value.ndim >= 2:
            total += math.prod(value.shape[:-1])
    return total


def check_request_pixels(inputs: Mapping[str, np.ndarray], max_request_pixels: int) -> int:
    """The request's decoded pixels, or INVALID_ARGUMENT naming both numbers when it is over the budget."""
    pixels = request_pixels(inputs)
    if pixels > max_request_pixels:
        raise InvalidArgument(
            f"the request's images decode to {pixels} pixels, more than the per-request budget of "
            f"{max_request_pixels}; send fewer or smaller images"
        )
    return pixels


class InflightPixels:
    """Decoded pixels of the requests running now; a request that would go over the bound is refused, not queued."""

    def __init__(self, max_inflight_pixels: int) -> None:
        self.max_inflight_pixels = max_inflight_pixels
        self._inflight = 0
        self._lock = threading.Lock()

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        with self._lock:
            # A lone request within its own budget always runs, so a budget above the bound cannot starve it.
            if self._inflight and self._inflight + pixels > self.max_inflight_pixels:
                raise ResourceExhausted(
                    f"the server is decoding {self._inflight} pixels for other requests; "
                    f"{pixels} more would exceed its bound of {self.max_inflight_pixels}, retry later"
                )
            self._inflight += pixels
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= pixels
