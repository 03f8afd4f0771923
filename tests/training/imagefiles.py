"""Builders of every bad (unusable) and odd (usable, converted) image kind, shared by the data and training tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests.conftest import encode_image

RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8)


def save_image(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height but holds (almost) no pixel data: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))


def png16_rgb() -> bytes:
    import tensorflow as tf

    return tf.io.encode_png(tf.constant(PIXELS.astype(np.uint16) * 257)).numpy()


def animated_gif() -> bytes:
    frames = [Image.fromarray(PIXELS).convert("P"), Image.fromarray(PIXELS[::-1]).convert("P")]
    return save_image(frames[0], "GIF", save_all=True, append_images=frames[1:])


def bad_files() -> dict[str, tuple[bytes, str]]:
    """rel_path → (bytes, the reason the report must give) for every unusable kind."""
    jpeg = encode_image(PIXELS, "JPEG")
    return {
        "cat/empty.jpg": (b"", "0-byte"),
        "cat/truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated JPEG"),
        "dog/notes-renamed.jpg": (b"these are my notes, not a photo\n" * 4, "not an image"),
        "dog/truncated.png": (encode_image(PIXELS)[:-30], "truncated PNG"),
        "dog/bomb.png": (png_header_only(30_000, 30_000), "absurd dimensions"),
        "cat/huge.png": (png_header_only(9_000, 7_000), "absurd dimensions (9000x7000 = 63 MP)"),
    }


def odd_files() -> dict[str, tuple[bytes, str]]:
    """rel_path → (bytes, the oddity the report must name) for every usable-but-odd kind."""
    image = Image.fromarray(PIXELS)
    return {
        "cat/cmyk.jpg": (save_image(image.convert("CMYK"), "JPEG"), "CMYK"),
        "cat/gray.jpg": (save_image(image.convert("L"), "JPEG"), "grayscale"),
        "dog/alpha.png": (save_image(image.convert("RGBA"), "PNG"), "alpha channel"),
        "dog/palette.png": (save_image(image.convert("P"), "PNG"), "palette"),
        "cat/animated.gif": (animated_gif(), "animated GIF (first frame used)"),
        "dog/deep.png": (png16_rgb(), "16-bit PNG"),
        "dog/gray16.png": (save_image(Image.fromarray(PIXELS[..., 0].astype(np.uint16) * 257), "PNG"), "16-bit PNG"),
        "cat/scan.tiff": (save_image(image, "TIFF"), "TIFF: format TensorFlow cannot decode (converted with PIL)"),
        "dog/png-named.jpg": (encode_image(PIXELS), "PNG data in a .jpg file"),
    }
