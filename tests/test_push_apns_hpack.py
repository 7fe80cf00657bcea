"""The APNs connections' HPACK shortcuts agree with hpack itself."""

from __future__ import annotations

from hpack import Decoder, Encoder

from mdm.push.apns.h2conn import FastDecoder, LiteralEncoder

HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"api.push.apple.com"),
    (b":path", b"/3/device/" + b"ab" * 100),
    (b"apns-topic", b"com.apple.mgmt.External.x"),
    (b"apns-expiration", b"0"),
    (b"x-" + b"n" * 200, b"v" * 300),  # multi-byte integers
    (b":status", b"200"),
]


def test_literal_blocks_decode_with_hpack_and_fast() -> None:
    encoder = LiteralEncoder()
    for _ in range(3):  # cached constant fields
        block = encoder.encode(HEADERS)
        assert [tuple(h) for h in Decoder().decode(block, raw=True)] == HEADERS
        assert [tuple(h) for h in FastDecoder().decode(block, raw=True)] == HEADERS


def test_indexed_and_huffman_blocks_fall_back_to_hpack() -> None:
    encoder, fast, reference = Encoder(), FastDecoder(), Decoder()
    for i in range(5):  # the dynamic table fills and is referenced
        block = encoder.encode([*HEADERS, (b"apns-id", str(i).encode())])
        assert list(fast.decode(block, raw=True)) == list(reference.decode(block, raw=True))
