"""``H2Connection`` tuned for many small, alike requests (the APNs client and its fake).

- h2 counts open streams (and forgets closed ones) by walking every stream it knows each time a
  stream opens: with a thousand streams in flight that walk dominated a push. Both sides bound
  their streams themselves (the client by the server's SETTINGS, the fake by its own limit), so
  the count is taken for real only every ``CLEAN_EVERY`` streams, which also keeps the forgetting.
- ``LiteralEncoder`` and ``FastDecoder`` replace hpack's encoder and decoder
  (``mdm.push.apns.hpackfast``).
- Streams are built from their attributes, not h2's three constructors (``_begin_new_stream``).
- ``send_headers`` / ``send_data`` make the same connection and stream state transitions as h2
  (the state machines, stream creation, flow-control windows) but write the frame bytes
  directly instead of building, flagging and serializing hyperframe objects: that was a third of
  a push's CPU. Anything unusual (priority, padding, CONTINUATION-sized blocks, informational
  responses, outbound header normalization or validation) takes h2's own path.
- ``_receive_frame`` is h2's (4.4) without its trace line, whose ``repr(frame)`` was built for
  every received frame even with logging off.
- ``receive_data`` (client side) takes the common answer (one HEADERS frame ending its stream)
  without hyperframe objects either (``mdm.push.apns.h2receive``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from h2.config import H2Configuration
from h2.connection import AllowedStreamIDs, ConnectionInputs, ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import (
    FlowControlError,
    FrameTooLargeError,
    ProtocolError,
    StreamClosedError,
    StreamIDTooLowError,
    TooManyStreamsError,
)
from h2.settings import SettingCodes
from h2.stream import H2Stream, H2StreamStateMachine, StreamInputs, StreamState
from h2.windows import WindowManager
from hyperframe.frame import Frame, RstStreamFrame

from mdm.push.apns.h2receive import receive_data as receive_fast
from mdm.push.apns.hpackfast import FastDecoder as FastDecoder  # (re-exported, as the names below)
from mdm.push.apns.hpackfast import LiteralEncoder as LiteralEncoder
from mdm.push.apns.hpackfast import _Fallback as _Fallback
from mdm.push.apns.hpackfast import _fast_decode as _fast_decode

CLEAN_EVERY = 512
_CLIENT_OPEN = ConnectionState.CLIENT_OPEN
_new = object.__new__
_HEADERS, _DATA = 0x1, 0x0
_END_STREAM, _END_HEADERS = 0x1, 0x4
class CountingH2Connection(H2Connection):
    _opened = 0

    def __init__(self, config: H2Configuration) -> None:
        super().__init__(config)
        # (an enum conversion costs microseconds: done once, not per stream)
        self._allowed_ids = AllowedStreamIDs(config.client_side)
        self.encoder = LiteralEncoder()  # type: ignore[assignment]
        decoder = FastDecoder()
        decoder.max_header_list_size = self.decoder.max_header_list_size
        self.decoder = decoder
        self._stream_windows: tuple[int, int] | None = None  # (inbound, outbound) initial windows
        self._max_streams: int | None = None  # the peer's SETTINGS_MAX_CONCURRENT_STREAMS

    @property
    def open_outbound_streams(self) -> int:
        self._opened += 1
        if self._opened % CLEAN_EVERY:
            return 0
        return int(super().open_outbound_streams)

    @property
    def open_inbound_streams(self) -> int:
        self._opened += 1
        if self._opened % CLEAN_EVERY:
            return 0
        return int(super().open_inbound_streams)

    def receive_data(self, data: Any) -> list[Any]:
        if self.config.client_side:  # (the fake, a server, keeps h2's path: it checks our frames)
            return receive_fast(self, data)
        return super().receive_data(data)

    def _receive_frame(self, frame: Frame) -> list[Any]:
        """h2's ``_receive_frame`` (4.4), less ``trace("Received frame: %s", repr(frame))``."""
        events: list[Any]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as e:
            if not self._stream_is_closed_by_reset(e.stream_id):
                raise
            reset = RstStreamFrame(e.stream_id)
            reset.error_code = e.error_code
            self._prepare_for_sending([reset])
            events = e._events
        except StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                reset = RstStreamFrame(e.stream_id)
                reset.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([reset])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    # -- streams built without their constructors

    def _begin_new_stream(self, stream_id: int, allowed_ids: AllowedStreamIDs) -> H2Stream:
        """h2's ``_begin_new_stream`` (4.4): the same checks and the same stream, but its three
        objects (stream, state machine, receive window) filled from a copy of their attributes'
        dict instead of three constructors, and the initial windows read from the settings once
        per change (each settings look-up hashes an enum in Python), not once per stream."""
        outbound = stream_id % 2 == self._allowed_ids  # (int(client_side), as h2's)
        highest = self.highest_outbound_stream_id if outbound else self.highest_inbound_stream_id
        if stream_id <= highest:
            raise StreamIDTooLowError(stream_id, highest)
        if stream_id % 2 != allowed_ids:
            raise ProtocolError("Invalid stream ID for peer.")
        windows = self._stream_windows
        if windows is None:
            windows = self._stream_windows = (self.local_settings.initial_window_size,
                                              self.remote_settings.initial_window_size)
        machine = _new(H2StreamStateMachine)
        machine.__dict__ = {"state": StreamState.IDLE, "stream_id": stream_id, "client": None,
                            "headers_sent": None, "trailers_sent": None, "headers_received": None,
                            "trailers_received": None, "stream_closed_by": None}
        window = _new(WindowManager)
        window.__dict__ = {"max_window_size": windows[0], "current_window_size": windows[0],
                           "_bytes_processed": 0}
        stream = _new(H2Stream)
        stream.__dict__ = {
            "state_machine": machine, "stream_id": stream_id,
            "max_outbound_frame_size": self.max_outbound_frame_size, "request_method": None,
            "outbound_flow_control_window": windows[1], "_inbound_window_manager": window,
            "_expected_content_length": None, "_actual_content_length": 0, "_authority": None,
            "config": self.config,
        }
        self.streams[stream_id] = stream
        if outbound:
            self.highest_outbound_stream_id = stream_id
        else:
            self.highest_inbound_stream_id = stream_id
        return stream

    # Where the initial windows can change: SETTINGS received (theirs, or the ACK of ours) and
    # our own SETTINGS sent.
    def _receive_settings_frame(self, frame: Any) -> Any:
        self._stream_windows = self._max_streams = None
        return super()._receive_settings_frame(frame)

    def update_settings(self, new_settings: dict[SettingCodes | int, int]) -> None:
        self._stream_windows = self._max_streams = None
        super().update_settings(new_settings)

    # -- sending without hyperframe objects (same state transitions as h2)

    def send_headers(
        self, stream_id: int, headers: Iterable[Any], end_stream: bool = False,
        priority_weight: int | None = None, priority_depends_on: int | None = None,
        priority_exclusive: bool | None = None,
    ) -> None:
        config = self.config
        client = config.client_side
        headers = headers if isinstance(headers, list) else list(headers)
        authority = method = None
        plain = True
        for name, value in headers:
            if type(name) is not bytes or type(value) is not bytes:
                plain = False
                break
            if name == b":authority" and authority is None:
                authority = value
            elif name == b":method" and method is None:
                method = value
        if (not plain or priority_weight is not None or priority_depends_on is not None
                or priority_exclusive is not None or config.normalize_outbound_headers
                or config.validate_outbound_headers
                or (not client and headers and headers[0][0] == b":status"
                    and headers[0][1][:1] == b"1")):
            super().send_headers(stream_id, headers, end_stream, priority_weight,
                                 priority_depends_on, priority_exclusive)
            return
        block = self.encoder.encode(headers)  # (stateless: no table to keep in step)
        if len(block) > self.max_outbound_frame_size:
            super().send_headers(stream_id, headers, end_stream)  # needs CONTINUATION frames
            return
        self._send_block(stream_id, block, end_stream, authority, method)

    def send_request(self, stream_id: int, block: bytes, authority: bytes, method: bytes) -> None:
        """``send_headers`` of a request whose header block is already encoded (``block``:
        ``LiteralEncoder``'s encoding of its fields, ``authority`` and ``method`` among them), not
        ending the stream: the same frame and the same transitions, without the fields' list, their
        scan and their encoding per push (the APNs client's requests)."""
        if len(block) > self.max_outbound_frame_size:
            raise FrameTooLargeError(f"a header block of {len(block)} bytes needs CONTINUATION frames")
        self._send_block(stream_id, block, False, authority, method)

    def _send_block(self, stream_id: int, block: bytes, end_stream: bool, authority: bytes | None,
                    method: bytes | None) -> None:
        client = self.config.client_side
        if stream_id not in self.streams:
            limit = self._max_streams
            if limit is None:  # (a settings look-up hashes an enum in Python: once per change)
                limit = self._max_streams = self.remote_settings.max_concurrent_streams
            value = self.open_outbound_streams
            if value + 1 > limit:
                raise TooManyStreamsError(f"Max outbound streams is {limit}, {value} open")
        if self.state_machine.state is not _CLIENT_OPEN:  # (open: no transition, no event)
            self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        stream = self.streams.get(stream_id) or self._begin_new_stream(stream_id, self._allowed_ids)
        machine = stream.state_machine
        if client and machine.state is StreamState.IDLE:
            # A request on a new stream: h2's IDLE + SEND_HEADERS (request_sent) without its
            # enum-keyed table look-up (the enums' hashing is Python code).
            machine.state = StreamState.OPEN
            machine.client = machine.headers_sent = True
        else:
            machine.process_input(StreamInputs.SEND_HEADERS)
        flags = _END_HEADERS
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
            flags |= _END_STREAM
        elif machine.trailers_sent:
            raise ProtocolError("Trailers must have END_STREAM set.")
        if client and stream._authority is None:
            stream._authority = authority
        stream.request_method = method
        self._data_to_send += _frame_header(len(block), _HEADERS, flags, stream_id) + block

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False,
                  pad_length: Any = None) -> None:
        if pad_length is not None or isinstance(data, memoryview):
            super().send_data(stream_id, data, end_stream, pad_length)
            return
        size = len(data)
        if size > 0 and size > self.local_flow_control_window(stream_id):
            raise FlowControlError(f"Cannot send {size} bytes, flow control window is "
                                   f"{self.local_flow_control_window(stream_id)}")
        if size > self.max_outbound_frame_size:
            raise FrameTooLargeError(f"Cannot send frame size {size}, max frame size is "
                                     f"{self.max_outbound_frame_size}")
        if self.state_machine.state is not _CLIENT_OPEN:
            self.state_machine.process_input(ConnectionInputs.SEND_DATA)
        stream = self.streams[stream_id]
        machine = stream.state_machine
        flags = 0
        if machine.state is StreamState.OPEN:  # (h2: SEND_DATA keeps it open, END_STREAM half-closes)
            if end_stream:
                machine.state = StreamState.HALF_CLOSED_LOCAL
                flags = _END_STREAM
        else:
            machine.process_input(StreamInputs.SEND_DATA)
            if end_stream:
                machine.process_input(StreamInputs.SEND_END_STREAM)
                flags = _END_STREAM
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        self._data_to_send += _frame_header(size, _DATA, flags, stream_id) + data


def _frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    """The 9-byte HTTP/2 frame header (RFC 9113 §4.1)."""
    return length.to_bytes(3, "big") + bytes((kind, flags)) + (stream_id & 0x7FFFFFFF).to_bytes(4, "big")
