"""Judge one image file: unusable (with the reason), usable as is, or usable-but-odd (with what is odd).

The header is read with PIL (format, mode, dimensions, frames) without decoding pixels, so a decompression
bomb is refused before anything allocates it. A file that passes is then decoded with the very function the
exported graph uses (`training.preprocessing.decode_image`), so "usable" means "TensorFlow decodes it";
files only PIL can read (TIFF, ...) are marked for conversion to PNG bytes (`to_png_bytes`).
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

from PIL import Image

from tlserve import contract

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = contract.MAX_IMAGE_PIXELS
# Formats `tf.io.decode_image` reads (TF 2.21); a file in another format that PIL reads is converted.
TF_FORMATS = contract.SUPPORTED_FORMATS
_EXTENSION_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".png": "PNG", ".bmp": "BMP"}
_ODD_MODES = {
    "CMYK": "CMYK",
    "L": "grayscale",
    "1": "grayscale (1-bit)",
    "I": "grayscale (32-bit)",
    "F": "grayscale (float)",
    "LA": "grayscale with alpha channel",
    "La": "grayscale with alpha channel",
    "RGBA": "alpha channel",
    "RGBa": "alpha channel",
    "P": "palette",
    "PA": "palette with alpha channel",
    "YCbCr": "YCbCr",
    "LAB": "Lab colour",
    "HSV": "HSV colour",
}


@dataclass(frozen=True)
class Verdict:
    """The outcome for one file; `problem` is the reason it is unusable, `oddities` what was odd but handled."""

    problem: str | None = None
    oddities: tuple[str, ...] = ()
    needs_conversion: bool = False

    @property
    def usable(self) -> bool:
        return self.problem is None


class _Bomb(Exception):
    """PIL refused the header's dimensions outright."""


@dataclass(frozen=True)
class Header:
    """What PIL reads from the first bytes of a file, without decoding pixels."""

    format: str
    mode: str
    width: int
    height: int
    animated: bool
    palette_transparency: bool


def read_header(data: bytes) -> Header | None:
    """Format, mode and size from the header alone (None when PIL does not recognise the bytes)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return Header(
                format=image.format or "unknown",
                mode=image.mode,
                width=image.width,
                height=image.height,
                animated=bool(getattr(image, "is_animated", False)),
                palette_transparency="transparency" in image.info,
            )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning is caught too: scan_dataset turns it into an error, so it cannot flood stderr.
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise _Bomb(f"{int(pixels.group(1)) / 1e6:.0f} MP" if pixels else "too many pixels") from exc
    except Exception:  # malformed headers make PIL raise anything (struct.error, IndexError, ...): not an image
        return None


def _png_bit_depth(data: bytes) -> int:
    # IHDR is always the first chunk: 8-byte signature, length, type, width, height, then bit depth.
    return data[24] if len(data) > 24 and data[12:16] == b"IHDR" else 8


def describe_oddities(header: Header, data: bytes, suffix: str) -> list[str]:
    """What is unusual about a decodable image (each is converted to 3-channel RGB on the fly)."""
    odd = []
    if header.format == "PNG" and _png_bit_depth(data) == 16:
        odd.append("16-bit PNG")
    elif header.mode.startswith("I;16"):
        odd.append("16-bit grayscale")
    elif header.mode in _ODD_MODES:
        odd.append(_ODD_MODES[header.mode])
    if header.mode == "P" and header.palette_transparency:
        odd.append("transparency")
    if header.animated:
        odd.append(f"animated {header.format} (first frame used)")
    expected = _EXTENSION_FORMATS.get(suffix.lower())
    if expected and expected != header.format:
        odd.append(f"{header.format} data in a {suffix} file")
    return odd


def tf_decodes(data: bytes) -> str | None:
    """None when the serving graph's decoder reads these bytes, else TensorFlow's error message."""
    import tensorflow as tf

    from training.preprocessing import decode_image

    try:
        decode_image(tf.constant(data))
    except tf.errors.OpError as exc:
        return str(exc.message).strip()
    return None


def pil_decodes(data: bytes) -> bool:
    try:
        to_png_bytes(data)
    except Exception:  # as in read_header: any PIL failure on these bytes means "PIL cannot decode it"
        return False
    return True


def to_png_bytes(data: bytes) -> bytes:
    """Any image PIL reads → 8-bit RGB PNG bytes (for files TensorFlow cannot decode itself)."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    buffer = io.BytesIO()
    rgb.save(buffer, "PNG")
    return buffer.getvalue()


def _truncation(header: Header, data: bytes) -> str | None:
    """ "truncated JPEG/PNG" when the end marker is missing (then PIL's half-read must not rescue the file)."""
    tail = data.rstrip(b"\x00")[-16:]
    if header.format == "JPEG" and not tail.endswith(b"\xff\xd9"):
        return "truncated JPEG"
    if header.format == "PNG" and b"IEND" not in tail:
        return "truncated PNG"
    return None


def inspect_image(data: bytes, suffix: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Verdict:
    """Classify one file's bytes; never raises for bad content."""
    if not data:
        return Verdict(problem="0-byte")
    try:
        header = read_header(data)
    except _Bomb as exc:
        return Verdict(problem=f"absurd dimensions ({exc}, a decompression bomb)")
    if header is not None and header.width * header.height > max_pixels:
        megapixels = header.width * header.height / 1e6
        return Verdict(problem=f"absurd dimensions ({header.width}x{header.height} = {megapixels:.0f} MP)")
    tf_error = tf_decodes(data)
    if header is None:
        return Verdict() if tf_error is None else Verdict(problem="not an image")
    oddities = describe_oddities(header, data, suffix)
    if tf_error is None:
        return Verdict(oddities=tuple(oddities))
    logger.debug("TensorFlow cannot decode a %s: %s", header.format, tf_error)
    truncated = _truncation(header, data)
    if truncated is not None:
        return Verdict(problem=truncated)
    if pil_decodes(data):
        reason = "TensorFlow cannot decode" if header.format in TF_FORMATS else "format TensorFlow cannot decode"
        return Verdict(oddities=(*oddities, f"{header.format}: {reason} (converted with PIL)"), needs_conversion=True)
    return Verdict(problem=f"corrupt {header.format}")
