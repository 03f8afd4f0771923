"""Every predict route accepts what training accepts: TIFF is converted to PNG (as training does), truncated files
are refused.

Training (`training.data.checks`) reads JPEG/PNG/BMP/GIF/WebP as they are, converts TIFF to 8-bit RGB PNG, and
refuses a JPEG or PNG whose end marker is missing ("truncated"). The gateway does the same before images join a
batch (/predict) or go upstream (`image_bytes` of TF Serving's REST `:predict` and gRPC `Predict`), so a truncated PNG
gets a plain 400 naming the image instead of TensorFlow's decoder error, and a TIFF that was good enough to train on
is good enough to classify. A 1.4 MB LZW TIFF can hold 36 Mpx, about a second
of decoding and PNG encoding: the TIFFs' pixels are held to the request's budget from their headers first, and the
caller runs the conversion in a thread (Pillow releases the GIL while it decodes, converts and encodes).
"""

from __future__ import annotations

import io
import re
import warnings

from service.gateway.core.request_limits import check_request_pixels
from service.gateway.errors import GatewayError, ImageTooLarge, InvalidImage

TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
CONVERTED_FORMATS = frozenset({"TIFF"})
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


def _named(index: int, names: list[str]) -> str:
    return f"image {index}" + (f" ({names[index]})" if index < len(names) and names[index] else "")


def truncation(data: bytes) -> str | None:
    """`PNG`/`JPEG` when a file of that format lacks its end marker (the check training applies to its data)."""
    tail = data.rstrip(b"\x00")[-16:]
    if data.startswith(PNG_MAGIC) and b"IEND" not in tail:
        return "PNG"
    if data.startswith(JPEG_MAGIC) and not tail.endswith(b"\xff\xd9"):
        return "JPEG"
    return None


def tiff_to_png(data: bytes, *, max_pixels: int, where: str) -> bytes:
    """A TIFF as 8-bit RGB PNG bytes (training's conversion), refusing decompression bombs before decoding."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb warnings (our limit decides), corrupt-tag warnings (raised below)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageTooLarge(
                        f"{where} is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
                    )
                rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"{where} is a TIFF that could not be decoded (truncated or corrupt)") from exc
    buffer = io.BytesIO()
    rgb.save(buffer, "PNG")
    return buffer.getvalue()


def tiff_pixels(data: bytes, *, where: str) -> int:
    """Width × height of a TIFF's first page from its header, without decoding it."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"{where} is a TIFF that could not be decoded (truncated or corrupt)") from exc
    return int(width) * int(height)


def has_tiff(images: list[bytes]) -> bool:
    return any(data.startswith(TIFF_MAGIC) for data in images)


def prepare_images(
    images: list[bytes], names: list[str], *, max_pixels: int, max_request_pixels: int | None = None
) -> list[bytes]:
    """The images as the model should receive them: TIFF → PNG; a truncated PNG or JPEG is a 400 naming it.

    With `max_request_pixels`, the TIFFs' pixels (from their headers) must fit it before any is converted.
    """
    for index, data in enumerate(images):
        truncated = truncation(data)
        if truncated is not None:
            raise InvalidImage(f"{_named(index, names)} is a truncated {truncated} file (its end marker is missing)")
    tiffs = [index for index, data in enumerate(images) if data.startswith(TIFF_MAGIC)]
    if max_request_pixels is not None and tiffs:
        check_request_pixels((tiff_pixels(images[i], where=_named(i, names)) for i in tiffs), max_request_pixels)
    prepared = list(images)
    for index in tiffs:
        prepared[index] = tiff_to_png(images[index], max_pixels=max_pixels, where=_named(index, names))
    return prepared


_IMAGE_INDEX = re.compile(r"^image (\d+) ")


def with_file_name(error: GatewayError, names: list[str]) -> GatewayError:
    """`image 1 is not a recognisable image file` → `image 1 (notes.txt) is ...` when the file name is known."""
    match = _IMAGE_INDEX.match(error.message)
    if match is None or not names:
        return error
    index = int(match.group(1))
    if index >= len(names) or not names[index]:
        return error
    named = type(error)(f"{_named(index, names)} {error.message[match.end() :]}")
    named.__cause__ = error.__cause__
    return named
