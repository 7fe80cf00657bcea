"""Helpers of the Android enrollment tests (tests/test_kes_enroll*.py): read a QR code back from
the PNG the server made (an independent decoder, zxing-cpp, on the PNG's own pixels)."""

from __future__ import annotations

import struct
import zlib

import zxingcpp

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _unfilter(line: bytearray, prev: bytearray, kind: int) -> None:
    if kind == 0:
        return
    if kind != 2:  # segno writes None and Up only
        raise AssertionError(f"PNG filter {kind} not handled by this test decoder")
    for i, above in enumerate(prev):
        line[i] = (line[i] + above) & 255


def png_pixels(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and 8-bit grey pixels of a 1-bit greyscale PNG (what segno writes)."""
    assert png.startswith(PNG_MAGIC), "not a PNG"
    pos, idat = len(PNG_MAGIC), b""
    width = height = 0
    while pos < len(png):
        (size,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + size]
        if zlib.crc32(kind + data) != struct.unpack(">I", png[pos + 8 + size:pos + 12 + size])[0]:
            raise AssertionError(f"bad CRC in chunk {kind!r}")
        pos += 12 + size
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", data[:10])
            assert (depth, colour) == (1, 0), "expected a 1-bit greyscale PNG"
        elif kind == b"IDAT":
            idat += data
    raw = zlib.decompress(idat)
    stride = (width + 7) // 8
    assert len(raw) == height * (stride + 1)
    prev, out = bytearray(stride), bytearray()
    for y in range(height):
        start = y * (stride + 1)
        line = bytearray(raw[start + 1:start + 1 + stride])
        _unfilter(line, prev, raw[start])
        prev = line
        out.extend(255 if line[x >> 3] >> (7 - (x & 7)) & 1 else 0 for x in range(width))
    return width, height, bytes(out)


def decode_qr(png: bytes) -> str:
    """The text of the one QR code in a PNG. Only QR codes are looked for: a QR code's modules
    can also read as a linear barcode (Codabar) now and then."""
    width, height, pixels = png_pixels(png)
    found = zxingcpp.read_barcodes(memoryview(pixels).cast("B", (height, width)),
                                   formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode))
    assert len(found) == 1, f"{len(found)} codes in the picture"
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    return str(found[0].text)
