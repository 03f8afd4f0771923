"""Read TFRecord files (TF Serving's warmup requests) without TensorFlow.

A record is framed as: uint64 length, uint32 masked CRC-32C of the length, the data, uint32 masked CRC-32C of
the data (all little-endian) — the format `tf.io.TFRecordWriter` writes. Both checksums are verified.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

_CASTAGNOLI = 0x82F63B78  # CRC-32C, reflected polynomial
_MASK_DELTA = 0xA282EAD8


class TFRecordError(ValueError):
    """The file is truncated or a checksum does not match."""


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CASTAGNOLI if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masking: rotate right by 15 bits and add a constant (so CRCs of CRCs stay strong)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path: Path) -> Iterator[bytes]:
    """Yield each record's payload in file order."""
    with path.open("rb") as file:
        while header := file.read(12):
            if len(header) < 12:
                raise TFRecordError(f"{path}: truncated record header")
            (length,) = struct.unpack("<Q", header[:8])
            (length_crc,) = struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != length_crc:
                raise TFRecordError(f"{path}: corrupt record length")
            data, footer = file.read(length), file.read(4)
            if len(data) < length or len(footer) < 4:
                raise TFRecordError(f"{path}: truncated record")
            if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise TFRecordError(f"{path}: record checksum mismatch")
            yield data


def encode_record(data: bytes) -> bytes:
    """One framed record (for tests and tools that write warmup files without TensorFlow)."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))
