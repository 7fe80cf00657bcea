"""``CountingH2Connection`` builds its streams without h2's constructors: the streams, their ids,
windows and closing must stay h2's (against a plain ``H2Connection`` fed the same frames)."""

from __future__ import annotations

from typing import Any

import pytest
from apns_h2_support import BODY, REQUEST, h2_config
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, RequestReceived, StreamReset
from h2.exceptions import FlowControlError, ProtocolError, StreamClosedError, StreamIDTooLowError
from h2.settings import SettingCodes
from h2.stream import H2Stream, H2StreamStateMachine, StreamState
from h2.windows import WindowManager

from mdm.push.apns.h2conn import CLEAN_EVERY, CountingH2Connection


def _connected(settings: dict[Any, int] | None = None) -> tuple[H2Connection, CountingH2Connection,
                                                                 H2Connection]:
    """h2's client and ours, both past the preface with the same server (one for both)."""
    plain, fast = H2Connection(h2_config(True)), CountingH2Connection(h2_config(True))
    server = H2Connection(h2_config(False))
    server.initiate_connection()
    server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 100, **(settings or {})})
    opening = server.data_to_send()
    for client in (plain, fast):
        client.initiate_connection()
        client.receive_data(opening)
    server.receive_data(plain.data_to_send())
    server.data_to_send()
    fast.data_to_send()
    return plain, fast, server


def _described(obj: Any) -> Any:
    """An object's attributes, the objects it holds described in turn (the config by identity)."""
    if isinstance(obj, H2Configuration):
        return id(obj)
    if isinstance(obj, (H2Stream, H2StreamStateMachine, WindowManager)):
        return {name: _described(value) for name, value in vars(obj).items()}
    return obj


def _streams(client: H2Connection) -> dict[int, Any]:
    described = {sid: _described(stream) for sid, stream in client.streams.items()}
    for stream in described.values():
        stream["config"] = None
    return described


def _request(client: H2Connection, body: bytes = BODY) -> int:
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, list(REQUEST))
    client.send_data(stream_id, body, end_stream=True)
    return stream_id


def test_a_stream_is_built_with_the_attributes_h2_gives_it() -> None:
    plain, fast, _ = _connected()
    for client in (plain, fast):
        _request(client)
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, list(REQUEST))  # (left open)
    assert _streams(fast) == _streams(plain)
    assert sorted(vars(fast.streams[1])) == sorted(vars(plain.streams[1]))
    assert all(stream.config is fast.config for stream in fast.streams.values())
    assert fast.highest_outbound_stream_id == plain.highest_outbound_stream_id == 3


def test_a_server_builds_inbound_streams_as_h2_does() -> None:
    client = H2Connection(h2_config(True))
    client.initiate_connection()
    for _ in range(3):
        _request(client)
    data = client.data_to_send()
    servers = [H2Connection(h2_config(False)), CountingH2Connection(h2_config(False))]
    events = []
    for server in servers:
        server.initiate_connection()
        events.append([type(e).__name__ for e in server.receive_data(data)])
        assert server.highest_inbound_stream_id == 5
    assert events[0] == events[1] and events[0].count(RequestReceived.__name__) == 3
    assert _streams(servers[1]) == _streams(servers[0])


def test_new_streams_take_the_windows_settings_give_them() -> None:
    plain, fast, server = _connected({SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    for client in (plain, fast):
        _request(client)
    assert fast.streams[1].outbound_flow_control_window == 1000 - len(BODY)
    server.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 70000,
                            SettingCodes.MAX_FRAME_SIZE: 20000})
    update = server.data_to_send()
    for client in (plain, fast):
        client.receive_data(update)
        client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 30000})
        _request(client)  # our SETTINGS not yet acknowledged: the old inbound window
    server.receive_data(plain.data_to_send())  # (the same frames as ours)
    fast.data_to_send()
    ack = server.data_to_send()
    for client in (plain, fast):
        client.receive_data(ack)
        _request(client)
    assert fast.streams[5]._inbound_window_manager.max_window_size == 30000
    assert fast.streams[5].outbound_flow_control_window == 70000 - len(BODY)
    assert fast.streams[5].max_outbound_frame_size == 20000
    assert _streams(fast) == _streams(plain)


def test_stream_ids_below_the_highest_are_refused_like_h2() -> None:
    plain, fast, _ = _connected()
    for client in (plain, fast):
        _request(client)
        _request(client)
    for client in (plain, fast):
        client.receive_data(b"")  # (nothing)
    outcomes = []
    for client in (plain, fast):
        with pytest.raises((StreamIDTooLowError, StreamClosedError, ProtocolError)) as caught:
            client.send_headers(1, list(REQUEST))
        outcomes.append(type(caught.value))
        with pytest.raises(StreamIDTooLowError):
            client.send_headers(1 if client.streams.get(1) is None else -1, list(REQUEST))
    assert outcomes[0] == outcomes[1]


def test_a_wrong_parity_stream_from_a_client_is_refused_like_h2() -> None:
    client = H2Connection(h2_config(True))
    client.initiate_connection()
    preface = client.data_to_send()
    block = H2Connection(h2_config(True)).encoder.encode(REQUEST)
    frame = len(block).to_bytes(3, "big") + b"\x01\x05" + (2).to_bytes(4, "big") + block
    sent = []
    for server in (H2Connection(h2_config(False)), CountingH2Connection(h2_config(False))):
        server.initiate_connection()
        server.receive_data(preface)
        server.data_to_send()
        with pytest.raises(ProtocolError):
            server.receive_data(frame)
        sent.append(server.data_to_send())  # the GOAWAY
    assert sent[0] == sent[1]


def test_more_streams_than_the_cleaning_interval_are_opened_answered_and_forgotten() -> None:
    plain, fast, server = _connected({SettingCodes.MAX_CONCURRENT_STREAMS: 2 * CLEAN_EVERY})
    count = 3 * CLEAN_EVERY + 7
    for round_ in range(count // 100 + 1):
        for client in (plain, fast):
            ids = [_request(client) for _ in range(min(100, count - round_ * 100))]
        for event in server.receive_data(plain.data_to_send()):
            if isinstance(event, DataReceived):
                server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        fast.data_to_send()
        for stream_id in ids:
            server.send_headers(stream_id, [(b":status", b"200"), (b"apns-id", b"x")],
                                end_stream=True)
        answers = server.data_to_send()
        for client in (plain, fast):
            ended = [e for e in client.receive_data(answers) if type(e).__name__ == "StreamEnded"]
            assert len(ended) == len(ids)
    assert fast.highest_outbound_stream_id == plain.highest_outbound_stream_id == 2 * count - 1
    # h2 forgets closed streams when it counts them; ours counts every CLEAN_EVERY streams
    assert len(fast.streams) <= CLEAN_EVERY + 100
    assert all(s.state_machine.state is StreamState.CLOSED for s in fast.streams.values())
    assert fast._open_streams(1) == 0  # the real count: none open, and every closed one forgotten
    assert len(fast.streams) == 0


def test_a_reset_stream_ends_like_h2s_and_frames_after_it_are_refused_alike() -> None:
    plain, fast, server = _connected()
    for client in (plain, fast):
        for _ in range(3):
            _request(client)
    server.receive_data(plain.data_to_send())
    fast.data_to_send()
    server.reset_stream(3, ErrorCodes.REFUSED_STREAM)
    server.send_headers(1, [(b":status", b"200")], end_stream=True)
    data = server.data_to_send()
    events = []
    for client in (plain, fast):
        got = client.receive_data(data)
        assert any(isinstance(e, StreamReset) and e.error_code == ErrorCodes.REFUSED_STREAM
                   for e in got)
        events.append([repr(e) for e in got])
    assert events[0] == events[1]
    assert _streams(fast) == _streams(plain)
    # our own reset of the last stream (a timeout), then a late answer on it
    late = []
    for client in (plain, fast):
        client.reset_stream(5, ErrorCodes.CANCEL)
        late.append(client.data_to_send())
    assert late[0] == late[1]
    block = H2Connection(h2_config(False)).encoder.encode([(b":status", b"200")])
    frame = len(block).to_bytes(3, "big") + b"\x01\x05" + (5).to_bytes(4, "big") + block
    after = []
    for client in (plain, fast):
        after.append(([repr(e) for e in client.receive_data(frame)], client.data_to_send()))
    assert after[0] == after[1]


def _one(kind: type[H2Connection], settings: dict[Any, int]) -> tuple[H2Connection, H2Connection]:
    client, server = kind(h2_config(True)), H2Connection(h2_config(False))
    server.initiate_connection()
    server.update_settings(settings)
    client.initiate_connection()
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())  # (the ACK of ours)
    return client, server


def _upload(kind: type[H2Connection], body: bytes) -> tuple[bytes, list[int], list[bytes]]:
    """One request whose body is sent as the windows allow; what the server received, the
    windows met, and what the client wrote."""
    client, server = _one(kind, {SettingCodes.INITIAL_WINDOW_SIZE: 20000})
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, list(REQUEST))
    received, windows, wrote = b"", [], []

    def exchange() -> None:
        nonlocal received
        wrote.append(client.data_to_send())
        for event in server.receive_data(wrote[-1]):
            if isinstance(event, DataReceived):
                received += event.data
                server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        client.receive_data(server.data_to_send())  # the WINDOW_UPDATEs

    sent = 0
    while sent < len(body):
        window = min(client.local_flow_control_window(stream_id), client.max_outbound_frame_size)
        windows.append(window)
        if window == 0:
            with pytest.raises(FlowControlError):
                client.send_data(stream_id, body[sent:sent + 1])
            exchange()
            continue
        part = body[sent:sent + window]
        sent += len(part)
        client.send_data(stream_id, part, end_stream=sent == len(body))
    exchange()
    assert client.streams[stream_id].state_machine.state is StreamState.HALF_CLOSED_LOCAL
    return received, windows, wrote


def test_a_payload_larger_than_the_windows_waits_for_window_updates() -> None:
    body = bytes(range(256)) * 300  # 76,800 bytes: over the stream's and the connection's window
    fast = _upload(CountingH2Connection, body)
    assert fast[0] == body
    assert 0 in fast[1]  # the window ran out on the way
    plain = _upload(H2Connection, body)
    assert fast[:2] == plain[:2]  # (the header blocks differ: our encoder is not hpack's)
    assert [len(data) for data in fast[2][1:]] == [len(data) for data in plain[2][1:]]
