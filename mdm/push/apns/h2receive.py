"""A client's ``H2Connection.receive_data`` with a short way for the answer APNs gives nearly every
push: one HEADERS frame with END_HEADERS and END_STREAM (``:status 200``, ``apns-id``) on a stream
the client has finished sending.

h2 turns every received frame into a hyperframe object (its flags a set, its header parsed field by
field), routes it through its frame buffer and dispatch table and looks the stream up again: about
a fifth of a push's CPU in the client. Here such a frame is recognised from its 9-byte header and
handed to the same steps h2 takes for it (``_receive_headers_frame``): the header block decoded by
the connection's decoder (in order with every other block, so that a dynamic table stays in step),
the connection's and the stream's state machines, the stream's ``receive_headers`` (informational
answers, trailers, content-length, the events). Every other frame — and that frame whenever
anything differs: other flags, a stream h2 does not hold in "half closed (local)", a header block
in progress, a frame over the size limit — goes through h2's own frame buffer and
``_receive_frame``, one frame at a time, so the events come out in the order the frames arrived.
"""

from __future__ import annotations

from typing import Any

from h2.connection import ConnectionInputs, ConnectionState, H2Connection, _decode_headers
from h2.errors import ErrorCodes
from h2.events import ResponseReceived, StreamEnded
from h2.exceptions import ProtocolError
from h2.stream import StreamClosedBy, StreamState
from hyperframe.exceptions import InvalidPaddingError

_HEADERS = 0x1
_END_STREAM_END_HEADERS = 0x5
_CLIENT_OPEN = ConnectionState.CLIENT_OPEN


def receive_data(connection: H2Connection, data: bytes) -> list[Any]:
    """``connection.receive_data(data)`` (client side), the common answer taken the short way."""
    buffer = connection.incoming_buffer
    buffer.add_data(data)
    limit = buffer.max_frame_size = connection.max_inbound_frame_size
    raw = buffer._data
    streams = connection.streams
    events: list[Any] = []
    try:
        while len(raw) >= 9:
            if raw[3] == _HEADERS and raw[4] == _END_STREAM_END_HEADERS and not buffer._headers_buffer:
                end = 9 + ((raw[0] << 16) | (raw[1] << 8) | raw[2])
                if end - 9 <= limit and len(raw) >= end:
                    stream = streams.get(int.from_bytes(raw[5:9], "big") & 0x7FFFFFFF)
                    if stream is not None and stream.state_machine.state is StreamState.HALF_CLOSED_LOCAL:
                        block = bytes(raw[9:end])
                        del raw[:end]
                        events += _response(connection, stream, block)
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


def _response(connection: H2Connection, stream: Any, block: bytes) -> list[Any]:
    """h2's ``_receive_headers_frame`` for a HEADERS frame (END_STREAM, no priority, no padding)
    on a stream it already holds."""
    headers = list(_decode_headers(connection.decoder, block))
    # (an open connection takes RECV_HEADERS without a transition or an event)
    events: list[Any] = (
        [] if connection.state_machine.state is _CLIENT_OPEN
        else connection.state_machine.process_input(ConnectionInputs.RECV_HEADERS))
    machine = stream.state_machine
    config = connection.config
    if (machine.headers_received or machine.client is not True or stream.request_method == b"HEAD"
            or config.normalize_inbound_headers or config.validate_inbound_headers
            or config.header_encoding or _unusual(headers)):
        frames, stream_events = stream.receive_headers(headers, True, config.header_encoding)
        if frames:  # (h2 sends none for received headers; kept as h2 would)
            connection._prepare_for_sending(frames)
        events += stream_events
        return events
    # The first answer, final and ending the stream, no content-length: what h2's stream does for
    # it (RECV_HEADERS, then RECV_END_STREAM from "half closed (local)"; headers taken as they are
    # with normalisation, validation and decoding off) without its two table look-ups keyed by
    # enums, whose hashing is Python code.
    machine.headers_received = True
    machine.state = StreamState.CLOSED
    machine.stream_closed_by = StreamClosedBy.RECV_END_STREAM
    response = ResponseReceived(stream_id=stream.stream_id)
    ended = StreamEnded(stream_id=stream.stream_id)
    response.stream_ended = ended
    response.headers = headers
    events += (response, ended)
    return events


def _unusual(headers: list[Any]) -> bool:
    """An informational status or a content-length: h2's stream takes those itself."""
    for name, value in headers:
        if name == b"content-length" or (name == b":status" and value[:1] == b"1"):
            return True
    return False
