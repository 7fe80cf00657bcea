"""A push's header block encoded once per push from cached parts (``PushHeaders.block``) and sent
with ``CountingH2Connection.send_request``: the same bytes, frames and stream state as the
field list through ``send_headers``, and the peer's stream limit read again when it changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from apns_h2_support import BODY, REQUEST, h2_config
from h2.connection import H2Connection
from h2.events import RequestReceived
from h2.exceptions import TooManyStreamsError
from h2.settings import SettingCodes
from hpack import Decoder

from mdm.push.apns.client import ApnsClient
from mdm.push.apns.h2conn import CountingH2Connection, LiteralEncoder
from mdm.push.apns.push_headers import PushHeaders
from mdm.push.config import ApnsConfig
from mdm.push.types import ApnsIdentity


def _headers(topic: str = "com.apple.mgmt.External.0123") -> PushHeaders:
    """A client's, as it builds them (its gateway's authority, its certificate's topic)."""
    identity = ApnsIdentity(b"", b"", topic, datetime(2030, 1, 1, tzinfo=UTC))  # (never dialled)
    headers: PushHeaders = ApnsClient(ApnsConfig(), identity)._headers
    return headers


def _fields(headers: PushHeaders, token: str, expiration: bytes) -> list[tuple[bytes, bytes]]:
    """The fields of the push the last block was for, as a list for the encoder."""
    return [*headers.base, (b":path", b"/3/device/" + token.lower().encode()), *headers.tail,
            (b"apns-expiration", expiration), (b"apns-id", headers.id_prefix + b"%012x" % headers.ids)]


@pytest.mark.parametrize("token", ["ab" * 32, "AB12" * 16, "0f" * 100])
def test_a_push_block_is_the_encoding_of_its_fields(token: str) -> None:
    headers = _headers()
    assert (b":authority", b"api.push.apple.com") in headers.base
    for expiration in (1700000000, 1700000000, 0, 1700000001):  # the apns-id counts on
        block = headers.block(token, expiration)
        fields = _fields(headers, token, str(expiration).encode())
        assert block == LiteralEncoder().encode(fields)
        assert [tuple(h) for h in Decoder().decode(block, raw=True)] == fields


def test_every_push_gets_its_own_apns_id() -> None:
    headers = _headers()
    ids = set()
    for _ in range(5):
        block = headers.block("ab" * 32, 0)
        ids.add(dict(Decoder().decode(block, raw=True))[b"apns-id"])
    assert len(ids) == 5
    assert all(len(i) == 36 for i in ids)


def _pair(streams: int = 100) -> tuple[H2Connection, CountingH2Connection, CountingH2Connection]:
    """A server and two of our clients past its preface (the server reads the second one's)."""
    server = H2Connection(h2_config(False))
    server.initiate_connection()
    server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: streams})
    opening = server.data_to_send()
    listed, blocked = CountingH2Connection(h2_config(True)), CountingH2Connection(h2_config(True))
    for client in (listed, blocked):
        client.initiate_connection()
        client.receive_data(opening)
    listed.data_to_send()
    server.receive_data(blocked.data_to_send())
    server.data_to_send()
    return server, listed, blocked


def _state(client: CountingH2Connection, stream_id: int) -> dict[str, Any]:
    stream = client.streams[stream_id]
    return {**{k: v for k, v in vars(stream).items() if k not in ("state_machine", "_inbound_window_manager",
                                                                    "config")},
            **vars(stream.state_machine)}


def test_send_request_writes_the_frames_and_states_send_headers_does() -> None:
    server, listed, blocked = _pair()
    block = LiteralEncoder().encode(REQUEST)
    for _ in range(3):
        a, b = listed.get_next_available_stream_id(), blocked.get_next_available_stream_id()
        listed.send_headers(a, list(REQUEST))
        blocked.send_request(b, block, b"api.push.apple.com", b"POST")
        sent = blocked.data_to_send()
        assert listed.data_to_send() == sent
        assert _state(listed, a) == _state(blocked, b)
        blocked.send_data(b, BODY, end_stream=True)
        events = server.receive_data(sent + blocked.data_to_send())
        received = [e for e in events if isinstance(e, RequestReceived)]
        assert [list(e.headers) for e in received] == [REQUEST]


def test_send_request_honours_the_peers_stream_limit_as_it_changes() -> None:
    server, _, client = _pair(streams=2)
    block = LiteralEncoder().encode(REQUEST)
    # (every CLEAN_EVERY-th look-up counts the open streams: force the count)
    client._opened = -1
    for _ in range(2):
        client.send_request(client.get_next_available_stream_id(), block, b"api.push.apple.com", b"POST")
        client._opened = -1
    with pytest.raises(TooManyStreamsError):
        client.send_request(client.get_next_available_stream_id(), block, b"api.push.apple.com", b"POST")
    server.receive_data(client.data_to_send())
    server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 10})
    client.receive_data(server.data_to_send())  # the new limit applies at once
    client._opened = -1
    client.send_request(client.get_next_available_stream_id(), block, b"api.push.apple.com", b"POST")
