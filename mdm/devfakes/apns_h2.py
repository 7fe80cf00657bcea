"""The APNs fake's ``H2Connection.receive_data`` with a short way for the request nearly every push
is: one HEADERS frame (END_HEADERS only) and one DATA frame (END_STREAM only) on a new stream, both
in the buffer.

Through h2 such a request costs two hyperframe objects (flags as sets, fields parsed one by one),
a stream with its state machine, three events and two flow-control managers: about two thirds of
the fake's CPU per push. Here the pair is recognised from the two 9-byte frame headers and handed
back as a ``FastRequest`` after the steps h2 takes for it that outlive the stream: the connection's
state machine, the highest inbound stream id, the open-stream check, the connection's inbound
window (``window_consumed`` now, ``ack`` later where the fake acknowledges the data, so that the
WINDOW_UPDATE frames leave as h2 would send them). Its answer is written as frames by ``answer``
(the same bytes ``CountingH2Connection`` writes). A stream taken this way never enters
``connection.streams``: it is over by the time its batch is answered; its id is recorded as closed
for frames that arrive on it later, as h2 does for a stream it has cleaned up.

Anything else goes through h2's frame buffer and ``_receive_frame`` one frame at a time, so events
come out in the order the frames arrived: a HEADERS frame whose DATA is not in the buffer yet,
other flags (padding, priority, CONTINUATION), a header block ``FastDecoder`` would hand to hpack
(Huffman, the dynamic table), a ``content-length`` or ``:status`` field (h2 checks those), a body
of half the stream window or more (h2 would send a stream WINDOW_UPDATE), a connection not open.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from h2.connection import ConnectionInputs, ConnectionState, H2Connection, H2ConnectionStateMachine
from h2.errors import ErrorCodes
from h2.exceptions import FlowControlError, ProtocolError, TooManyStreamsError
from h2.stream import StreamClosedBy
from hyperframe.exceptions import InvalidPaddingError

from mdm.push.apns.h2conn import FastDecoder, _Fallback, _fast_decode, _frame_header

_DATA, _HEADERS, _RST_STREAM, _WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x8
_END_STREAM, _END_HEADERS = 0x1, 0x4
_OPEN, _IDLE = ConnectionState.SERVER_OPEN, ConnectionState.IDLE
# The transitions skipped here are no-ops in h2 (4.4): checked once rather than assumed.
_USABLE = all(
    H2ConnectionStateMachine._transitions.get((state, done)) == (None, _OPEN)
    for state, done in ((_IDLE, ConnectionInputs.RECV_HEADERS), (_OPEN, ConnectionInputs.RECV_HEADERS),
                        (_OPEN, ConnectionInputs.RECV_DATA), (_OPEN, ConnectionInputs.SEND_HEADERS),
                        (_OPEN, ConnectionInputs.SEND_DATA), (_OPEN, ConnectionInputs.SEND_RST_STREAM))
)


class FastRequest(NamedTuple):
    """A whole request taken without h2: what ``RequestReceived``, ``DataReceived`` and
    ``StreamEnded`` would have said."""

    stream_id: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def receive_data(connection: H2Connection, data: bytes) -> list[Any]:
    """``connection.receive_data(data)`` (server side): h2's events, and a ``FastRequest`` in the
    place of each request taken the short way."""
    if not _USABLE or type(connection.decoder) is not FastDecoder:
        return list(connection.receive_data(data))
    buffer = connection.incoming_buffer
    buffer.add_data(data)
    limit = buffer.max_frame_size = connection.max_inbound_frame_size
    raw = buffer._data
    events: list[Any] = []
    try:
        while len(raw) >= 9:
            if raw[3] == _HEADERS and raw[4] == _END_HEADERS and not buffer._headers_buffer:
                request = _take_request(connection, raw, limit)
                if request is not None:
                    events.append(request)
                    continue
            frame = next(buffer, None)  # one frame (and its CONTINUATIONs) h2's own way
            if frame is None:
                break
            events.extend(connection._receive_frame(frame))
    except InvalidPaddingError as exc:  # (as h2's receive_data)
        connection._terminate_connection(ErrorCodes.PROTOCOL_ERROR)
        raise ProtocolError("Received frame with invalid padding.") from exc
    except ProtocolError as exc:
        connection._terminate_connection(exc.error_code)
        raise
    return events


def _take_request(connection: H2Connection, raw: bytearray, limit: int) -> FastRequest | None:
    size = (raw[0] << 16) | (raw[1] << 8) | raw[2]
    head = 9 + size  # where the DATA frame's header starts
    if size > limit or len(raw) < head + 9 or raw[head + 3] != _DATA or raw[head + 4] != _END_STREAM:
        return None
    stream_id = int.from_bytes(raw[5:9], "big")
    if raw[head + 5:head + 9] != raw[5:9] or not stream_id & 1 or stream_id >> 31:
        return None
    if stream_id <= connection.highest_inbound_stream_id:
        return None
    length = (raw[head] << 16) | (raw[head + 1] << 8) | raw[head + 2]
    end = head + 9 + length
    if length > limit or len(raw) < end:
        return None
    machine = connection.state_machine
    if machine.state is not _OPEN and machine.state is not _IDLE:
        return None
    settings = connection.local_settings
    manager = connection._inbound_flow_control_window_manager
    if length and (length >= settings.initial_window_size // 2 or length > manager.current_window_size):
        return None
    decoder = connection.decoder
    if size > decoder.max_header_list_size:
        return None
    try:
        headers = _fast_decode(bytes(raw[9:head]))
    except (_Fallback, IndexError):
        return None
    for name, _ in headers:
        if name == b"content-length" or name == b":status":
            return None
    # Taken: h2's steps for these two frames, in its order (a refusal raises as h2 would).
    limit_streams = settings.max_concurrent_streams
    open_streams = connection.open_inbound_streams  # (a property with side effects: once)
    if open_streams + 1 > limit_streams:
        raise TooManyStreamsError(f"Max inbound streams is {limit_streams}, {open_streams} open")
    machine.state = _OPEN
    connection.highest_inbound_stream_id = stream_id
    manager.window_consumed(length)
    body = bytes(raw[head + 9:end])
    del raw[:end]
    return FastRequest(stream_id, cast(list[tuple[bytes, bytes]], headers), body)


def ack(connection: H2Connection, request: FastRequest) -> None:
    """``acknowledge_received_data`` for the request's body: the connection's window only (the
    stream's would not move: its body is under half the window)."""
    increment = connection._inbound_flow_control_window_manager.process_bytes(len(request.body))
    if increment:
        connection._data_to_send += _frame_header(4, _WINDOW_UPDATE, 0, 0) + increment.to_bytes(4, "big")


def refuse(connection: H2Connection, stream_id: int) -> None:
    """``reset_stream(stream_id, REFUSED_STREAM)`` for a request taken the short way."""
    _sending(connection, ConnectionInputs.SEND_RST_STREAM)
    connection._data_to_send += (_frame_header(4, _RST_STREAM, 0, stream_id)
                                 + int(ErrorCodes.REFUSED_STREAM).to_bytes(4, "big"))
    connection._closed_streams[stream_id] = StreamClosedBy.SEND_RST_STREAM


def answer(connection: H2Connection, stream_id: int, headers: list[tuple[bytes, bytes]],
           body: bytes | None) -> None:
    """``send_headers`` (and ``send_data`` with END_STREAM when there is a body) for a request
    taken the short way: the bytes ``CountingH2Connection`` writes, the same window checks."""
    block = connection.encoder.encode(headers)
    if len(block) > connection.max_outbound_frame_size:  # (an answer's few fields never are)
        raise ProtocolError("an answer's header block needs CONTINUATION frames")
    _sending(connection, ConnectionInputs.SEND_HEADERS)
    if body is None:
        connection._data_to_send += _frame_header(len(block), _HEADERS, _END_HEADERS | _END_STREAM,
                                                  stream_id) + block
    else:
        size = len(body)
        window = min(connection.outbound_flow_control_window,
                     connection.remote_settings.initial_window_size)
        if size > window:
            raise FlowControlError(f"Cannot send {size} bytes, flow control window is {window}")
        connection._data_to_send += _frame_header(len(block), _HEADERS, _END_HEADERS, stream_id) + block
        _sending(connection, ConnectionInputs.SEND_DATA)
        connection.outbound_flow_control_window -= size
        connection._data_to_send += _frame_header(size, _DATA, _END_STREAM, stream_id) + body
    connection._closed_streams[stream_id] = StreamClosedBy.SEND_END_STREAM


def _sending(connection: H2Connection, what: ConnectionInputs) -> None:
    if connection.state_machine.state is not _OPEN:
        connection.state_machine.process_input(what)  # (raises in a closed connection, as h2)
