"""The APNs fake's short way for the usual request (``mdm.devfakes.apns_h2``) against h2's own path:
the same client bytes, however they are cut, give the same bytes back (answers, apns-ids, reasons,
WINDOW_UPDATEs, refusals), the same counts and the same accepted pushes."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection

from mdm.devfakes.apns import FakeApns, _FakeConnection
from mdm.devfakes.certs import FakeCerts, write_fake_certs
from mdm.push.apns.h2conn import CountingH2Connection

TOPIC = "com.apple.mgmt.External.test"
GONE, BAD, OTHER = "cd" * 32, "ef" * 32, "0123" * 16
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


class Sink:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.aborted = self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FakeCerts:
    return write_fake_certs(Path(tmp_path_factory.mktemp("apns-fast")))


def _headers(n: int, token: str = "ab" * 32, **changes: bytes | None) -> list[tuple[bytes, bytes]]:
    values: dict[bytes, bytes | None] = {
        b":method": b"POST", b":scheme": b"https", b":authority": b"api.push.apple.com",
        b":path": b"/3/device/" + token.encode(), b"apns-topic": TOPIC.encode(),
        b"apns-push-type": b"mdm", b"apns-priority": b"10" if n % 3 else b"5",
        b"apns-expiration": str(n % 2 * 1_700_000_000).encode(),
        b"apns-id": str(uuid.UUID(int=n + 1)).upper().encode(),
    }
    for key, value in changes.items():
        values[key.replace("_", "-").encode()] = value
    return [(k, v) for k, v in values.items() if v is not None]


Request = tuple[list[tuple[bytes, bytes]], bytes]


def _requests(rng: random.Random, count: int, window: int = 65535) -> list[Request]:
    """Mostly good pushes, and every kind of answer the fake gives; bodies within the stream
    ``window`` (some over half of it) and a frame."""
    most = min(window, 16384) - 12
    body = b'{"mdm":"6F6E2D8A-3B6C-4D4A-9E8B-2C1D0F1E2A3B"}'
    odd: list[tuple[list[tuple[bytes, bytes]], bytes]] = []
    for n in range(count):
        kind = rng.randrange(24)
        if kind == 0:
            odd.append((_headers(n, apns_topic=b"com.apple.mgmt.other"), body))  # 400 TopicDisallowed
        elif kind == 1:
            odd.append((_headers(n, token="xyz"), body))  # 400 BadDeviceToken
        elif kind == 2:
            odd.append((_headers(n, token=GONE), body))  # 410 Unregistered, its timestamp
        elif kind == 3:
            odd.append((_headers(n), b""))  # 400 PayloadEmpty (an empty DATA frame)
        elif kind == 4:
            odd.append((_headers(n), b'{"mdm":"' + b"x" * min(5000, most) + b'"}'))  # 413 (big)
        elif kind == 5:
            odd.append(([(k, b"GET" if k == b":method" else v) for k, v in _headers(n)], body))  # 405
        elif kind == 6:
            odd.append(([*_headers(n), (b"apns-priority", b"5")], body))  # 400 DuplicateHeaders
        elif kind == 7:  # a content-length: h2 checks it (the long way)
            odd.append(([*_headers(n), (b"content-length", str(len(body)).encode())], body))
        elif kind == 8:
            odd.append((_headers(n, token=BAD), body))  # 400 BadDeviceToken (control)
        elif kind == 9:
            odd.append((_headers(n, token=OTHER), body))  # 400 DeviceTokenNotForTopic
        elif kind == 10:
            odd.append((_headers(n), b'{"mdm":"' + b"y" * rng.randrange(20, most) + b'"}'))
        else:
            odd.append((_headers(n, token=f"{n:064x}"), body))
    return odd


def _client_writes(requests: list[tuple[list[tuple[bytes, bytes]], bytes]], literal: bool) -> list[bytes]:
    """A client's writes, one per request: its preamble and SETTINGS with the first, then two
    SETTINGS ACKs (the fake's opening and its raised stream limit, if they have arrived by then).
    ``literal``: our client's encoder (the short way applies); otherwise hpack's (Huffman, the
    dynamic table)."""
    config = H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                             normalize_outbound_headers=False)
    client = CountingH2Connection(config) if literal else H2Connection(config)
    client.initiate_connection()
    # (the fake's WINDOW_UPDATEs are not read: a large one instead, for the client's own count)
    client.receive_data(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + (10_000_000).to_bytes(4, "big"))
    writes = []
    for n, (headers, body) in enumerate(requests):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, headers)
        client.send_data(stream_id, body, end_stream=True)
        writes.append(client.data_to_send() + (SETTINGS_ACK + SETTINGS_ACK if n == 0 else b""))
    return writes


def _client_bytes(requests: list[tuple[list[tuple[bytes, bytes]], bytes]], literal: bool) -> bytes:
    return b"".join(_client_writes(requests, literal))


def _serve(certs: FakeCerts, fast: bool, chunks: list[bytes], initial_window: int) -> dict[str, Any]:
    fake = FakeApns(push_ca=certs.push_ca, server_cert=certs.server_cert, server_key=certs.server_key,
                    fast_path=fast, initial_window=initial_window, raise_streams_to=6)
    fake.unregister(GONE, 1_700_000_000_123)
    fake.bad_token(BAD)
    fake.token_topic(OTHER, "com.apple.mgmt.External.other")
    fake.throttle(2)
    fake.fail(1, 503)
    sink = Sink()
    connection = _FakeConnection(fake)
    connection.connection_made(cast(Any, sink))
    connection.topic = TOPIC
    for n, chunk in enumerate(chunks):
        if sink.aborted or sink.closed:
            break
        connection.data_received(chunk)
        if n == 3:
            fake.throttle(1)  # a control between reads
    return {
        "bytes": bytes(sink.out), "aborted": sink.aborted, "count": fake.count, "requests": fake.requests,
        "answers": fake.answers, "refused": fake.refused_streams, "max_concurrent": fake.max_concurrent,
        "accepted": [(a.token, a.apns_id, a.priority, a.expiration, a.body) for a in fake.accepted],
        "open": sorted(connection.requests), "fast": fake.fast_requests,
    }


def _usual(requests: list[Request]) -> int:
    """How many requests the short way takes (no content-length, a body under half the window)."""
    return sum(1 for headers, body in requests
               if all(name != b"content-length" for name, _ in headers) and len(body) < 65535 // 2)


def _cut(data: bytes, rng: random.Random, pieces: int) -> list[bytes]:
    points = sorted(rng.sample(range(1, len(data)), min(pieces, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _same(certs: FakeCerts, chunks: list[bytes], initial_window: int) -> dict[str, Any]:
    slow = _serve(certs, False, chunks, initial_window)
    fast = _serve(certs, True, chunks, initial_window)
    assert slow.pop("fast") == 0
    taken = fast.pop("fast")
    assert fast == slow
    fast["fast"] = taken
    return fast


@pytest.mark.parametrize("seed", range(40))
def test_the_short_way_answers_as_h2_however_the_bytes_are_cut(certs: FakeCerts, seed: int) -> None:
    rng = random.Random(seed)
    window = 65535 if seed % 4 else 300  # a small stream window: some bodies go the long way
    data = _client_bytes(_requests(rng, rng.randrange(20, 120), window), literal=seed % 8 != 7)
    result = _same(certs, _cut(data, rng, rng.choice((3, 20, 200, 2000))), window)
    assert result["requests"] > 0 and not result["aborted"]
    if seed % 8 == 7:
        assert result["fast"] == 0  # hpack's Huffman and dynamic table: h2's path


def test_one_read_per_request_takes_every_usual_request_the_short_way(certs: FakeCerts) -> None:
    rng = random.Random(99)
    requests = _requests(rng, 60)
    chunks = _client_writes(requests, literal=True)
    result = _same(certs, chunks, 65535)
    assert result["fast"] == _usual(requests) > 0
    assert result["refused"] == 0 and result["answers"].get(200, 0) > 0
    assert {429, 503, 410, 413}.issubset(result["answers"])


def test_every_request_in_one_read_refuses_beyond_the_first_stream_alike(certs: FakeCerts) -> None:
    requests = _requests(random.Random(7), 30)
    result = _same(certs, [_client_bytes(requests, literal=True)], 65535)
    assert result["refused"] == 29 and result["requests"] == 1 and result["fast"] == _usual(requests)


def test_byte_by_byte_answers_alike(certs: FakeCerts) -> None:
    rng = random.Random(3)
    data = _client_bytes(_requests(rng, 8), literal=True)
    _same(certs, [data[i:i + 1] for i in range(len(data))], 65535)
