"""The client's HTTP/2 paths (``mdm.push.apns.h2receive``, ``CountingH2Connection``'s sends) against
h2's own: requests leave the streams as h2 does; the same bytes from a server give the same events,
stream states and errors, however the bytes are cut."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from apns_h2_support import BODY, REQUEST, h2_config
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, RequestReceived
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from h2.stream import StreamState

from mdm.push.apns import h2receive
from mdm.push.apns.h2conn import CountingH2Connection


def _pair(streams: int) -> tuple[H2Connection, CountingH2Connection, H2Connection, bytes]:
    """Two clients made alike (h2's and ours), ``streams`` requests each; a server answering the
    plain one. Returns both clients, the server and the server's opening bytes."""
    plain, fast = H2Connection(h2_config(True)), CountingH2Connection(h2_config(True))
    server = H2Connection(h2_config(False))
    server.initiate_connection()
    server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 100})
    opening = server.data_to_send()
    for client in (plain, fast):
        client.initiate_connection()
        client.receive_data(opening)
    server.receive_data(plain.data_to_send())
    fast.data_to_send()
    for client in (plain, fast):
        for _ in range(streams):
            stream_id = client.get_next_available_stream_id()
            client.send_headers(stream_id, list(REQUEST))
            client.send_data(stream_id, BODY, end_stream=True)
    for event in server.receive_data(plain.data_to_send()):
        if isinstance(event, DataReceived):
            server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    fast.data_to_send()
    return plain, fast, server, opening


def _described(events: list[Any]) -> list[str]:
    # (an answer's repr leaves out the StreamEnded it carries)
    return [repr(event) + repr(getattr(event, "stream_ended", None)) for event in events]


def _feed(client: H2Connection, data: bytes, cuts: list[int]) -> list[str]:
    events: list[Any] = []
    start = 0
    for cut in [*cuts, len(data)]:
        events += client.receive_data(data[start:cut])
        start = cut
    return _described(events)


def _states(client: H2Connection) -> dict[int, tuple[object, ...]]:
    return {stream_id: (m.state, m.headers_received, m.trailers_received, m.stream_closed_by,
                        stream._expected_content_length, stream._actual_content_length)
            for stream_id, stream in client.streams.items() for m in [stream.state_machine]}


def test_requests_leave_the_streams_as_h2_does() -> None:
    plain, fast, _, _ = _pair(3)
    assert _states(fast) == _states(plain)
    for client in (plain, fast):  # headers now, the body in two parts (as when the window is short)
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, list(REQUEST))
        client.send_data(stream_id, BODY[:4])
        assert client.streams[stream_id].state_machine.state is StreamState.OPEN
        client.send_data(stream_id, BODY[4:], end_stream=True)
    assert _states(fast) == _states(plain)
    assert fast.outbound_flow_control_window == plain.outbound_flow_control_window
    for client in (plain, fast):  # nothing more on a half-closed stream
        with pytest.raises(ProtocolError):
            client.send_data(1, b"x")


@pytest.mark.parametrize("seed", range(6))
def test_same_events_as_h2_for_every_kind_of_answer(seed: int) -> None:
    plain, fast, server, _ = _pair(14)
    ids = sorted(plain.streams)
    server.send_headers(ids[0], [(b":status", b"200"), (b"apns-id", b"id-0")], end_stream=True)
    # an error with its JSON body (HEADERS, then DATA ending the stream)
    server.send_headers(ids[1], [(b":status", b"400"), (b"apns-id", b"id-1"),
                                 (b"content-type", b"application/json")])
    server.send_data(ids[1], json.dumps({"reason": "BadDeviceToken"}).encode(), end_stream=True)
    server.reset_stream(ids[2], ErrorCodes.INTERNAL_ERROR)
    server.ping(b"12345678")
    server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 500})
    # hpack's own encoder: indexed fields, Huffman, the dynamic table (as the real gateway may)
    for n, stream_id in enumerate(ids[3:8]):
        server.send_headers(stream_id, [(b":status", b"200"), (b"apns-id", f"id-{n}".encode()),
                                        (b"apns-unique-id", b"u" * 36)], end_stream=True)
    # a header block split into HEADERS and CONTINUATION frames
    server.max_outbound_frame_size = 16384
    server.send_headers(ids[8], [(b":status", b"200"), (b"x-long", b"v" * 20000)], end_stream=True)
    server.send_headers(ids[9], [(b":status", b"410"), (b"apns-id", b"id-9")])
    server.send_data(ids[9], b'{"reason":"Unregistered","timestamp":1}', end_stream=True)
    server.send_headers(ids[10], [(b":status", b"200")], end_stream=True)
    server.send_headers(ids[11], [(b":status", b"103"), (b"link", b"</x>")])  # informational first
    server.send_headers(ids[11], [(b":status", b"200"), (b"content-length", b"0")], end_stream=True)
    server.send_headers(ids[12], [(b":status", b"200")])  # headers, body, trailers
    server.send_data(ids[12], b"{}")
    server.send_headers(ids[12], [(b"x-trailer", b"t")], end_stream=True)
    server.close_connection(ErrorCodes.NO_ERROR, b'{"reason":"Shutdown"}', last_stream_id=ids[12])
    data = server.data_to_send()
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 8)) if seed else []
    expected = _feed(plain, data, cuts)
    assert _feed(fast, data, cuts) == expected
    assert _states(fast) == _states(plain)
    assert fast.data_to_send() == plain.data_to_send()  # the same WINDOW_UPDATEs, PING ack, ...
    assert any("ResponseReceived" in e and "id-0" in e for e in expected)
    assert any("ConnectionTerminated" in e for e in expected)
    assert any("InformationalResponseReceived" in e for e in expected)
    assert any("TrailersReceived" in e for e in expected)


def test_a_burst_of_answers_in_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    plain, fast, server, _ = _pair(50)
    for stream_id in sorted(plain.streams):
        server.send_headers(stream_id, [(b":status", b"200"), (b"apns-id", b"x")], end_stream=True)
    data = server.data_to_send()
    short_way = []
    response = h2receive._response

    def counted(*args: Any) -> list[Any]:
        short_way.append(1)
        return response(*args)

    monkeypatch.setattr(h2receive, "_response", counted)
    assert _feed(fast, data, []) == _feed(plain, data, [])
    assert {state[0] for state in _states(fast).values()} == {StreamState.CLOSED}
    assert len(short_way) == 50  # every answer taken the short way


@pytest.mark.parametrize("answer", [
    [(b":status", b"100")],  # an informational answer may not end the stream
    [(b":status", b"200"), (b"content-length", b"five")],  # not a number
])
def test_the_same_protocol_errors_as_h2(answer: list[tuple[bytes, bytes]]) -> None:
    plain, fast, _, _ = _pair(1)
    encoder = H2Connection(h2_config(False)).encoder
    block = encoder.encode(answer)
    frame = len(block).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big") + block
    failures = []
    for client in (plain, fast):
        with pytest.raises(ProtocolError) as caught:
            client.receive_data(frame)
        failures.append((type(caught.value), client.data_to_send()))
    assert failures[0] == failures[1]  # the same error, the same GOAWAY


def test_an_answer_on_a_stream_never_opened_is_refused_like_h2() -> None:
    plain, fast, _, _ = _pair(1)
    block = H2Connection(h2_config(False)).encoder.encode([(b":status", b"200")])
    frame = len(block).to_bytes(3, "big") + b"\x01\x05" + (7).to_bytes(4, "big") + block
    outcomes: list[tuple[str, object]] = []
    for client in (plain, fast):
        try:
            outcomes.append(("events", _described(client.receive_data(frame))))
        except ProtocolError as exc:
            outcomes.append(("error", type(exc).__name__))
        outcomes.append(("sent", client.data_to_send()))
    assert outcomes[:2] == outcomes[2:]


def test_the_server_side_keeps_h2s_path() -> None:
    server = CountingH2Connection(h2_config(False))
    server.initiate_connection()
    client = H2Connection(h2_config(True))
    client.initiate_connection()
    client.send_headers(1, list(REQUEST), end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert any(isinstance(event, RequestReceived) for event in events)
