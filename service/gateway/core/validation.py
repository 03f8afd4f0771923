"""Cheap checks of encoded images before they join a batch: format, dimensions and pixel count from the header only.

No TensorFlow here: decoding is the model's job (its serving_default decodes in the graph).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeAlias

from service.gateway.errors import ImageTooLarge, InvalidImage, PayloadTooLarge, UnsupportedMediaType, translate_errors
from tlserve.contract import SUPPORTED_FORMATS

ImageBytes: TypeAlias = bytes


@dataclass(frozen=True)
class ImageHeader:
    """What the header says about one encoded image."""

    format: str
    width: int
    height: int
    frames: int = 1  # an animation decodes every frame

    @property
    def decoded_pixels(self) -> int:
        return self.width * self.height * self.frames


def check_image(data: ImageBytes, *, max_pixels: int, index: int = 0) -> ImageHeader:
    """Read the header (not the pixels) and refuse what the model cannot or should not decode."""
    from PIL import Image

    if not data:
        raise InvalidImage(f"image {index} is empty")
    with _image_errors(index), warnings.catch_warnings():
        # PIL warns (and, past 2x its own limit, raises) on huge images; our own limit below decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            frames = max(int(getattr(image, "n_frames", 1)), 1)
            header = ImageHeader(format=image.format or "", width=image.width, height=image.height, frames=frames)
    if header.format not in SUPPORTED_FORMATS:
        supported = ", ".join(sorted(SUPPORTED_FORMATS))
        raise UnsupportedMediaType(f"image {index} is {header.format or 'of unknown format'}; supported: {supported}")
    if header.width < 1 or header.height < 1:
        raise InvalidImage(f"image {index} has no pixels ({header.width}x{header.height})")
    if header.width * header.height > max_pixels:
        raise ImageTooLarge(
            f"image {index} is {header.width}x{header.height} = {header.width * header.height} pixels, "
            f"more than the limit of {max_pixels}"
        )
    return header


@contextmanager
def _image_errors(index: int) -> Iterator[None]:
    """PIL's errors as InvalidImage/ImageTooLarge naming the image, without PIL's object reprs."""
    from PIL import UnidentifiedImageError

    try:
        with translate_errors(decoding_images=True):
            yield
    except InvalidImage as error:
        if isinstance(error.__cause__, UnidentifiedImageError):
            raise InvalidImage(f"image {index} is not a recognisable image file") from error.__cause__
        raise InvalidImage(f"image {index}: {error.message}") from error.__cause__


def check_images(images: list[ImageBytes], *, max_images: int, max_pixels: int) -> list[ImageHeader]:
    """Check the count, then every image; the first failure names its index."""
    if not images:
        raise InvalidImage("no image in the request")
    if len(images) > max_images:
        raise PayloadTooLarge(f"{len(images)} images in one request, more than the limit of {max_images}")
    return [check_image(data, max_pixels=max_pixels, index=index) for index, data in enumerate(images)]
