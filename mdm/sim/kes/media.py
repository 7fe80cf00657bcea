"""The picture a Mugshot command takes: a real PNG (signature, IHDR, zlib-compressed IDAT, IEND,
each chunk with its CRC), a gradient with noise so that no two shots are the same bytes."""

from __future__ import annotations

import random
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONTENT_TYPE = "image/png"


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(width: int = 64, height: int = 48, rng: random.Random | None = None) -> bytes:
    """An RGB, 8-bit, non-interlaced PNG of ``width`` x ``height`` pixels."""
    r = rng or random.Random()  # noqa: S311 - picture noise
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter type None
        for x in range(width):
            row += bytes(((x * 255 // width) ^ r.randrange(16), (y * 255 // height), r.randrange(256)))
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(rows))) \
        + _chunk(b"IEND", b"")
