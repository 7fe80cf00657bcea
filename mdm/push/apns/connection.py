"""One long-lived HTTP/2 connection to the APNs gateway (h2 over an asyncio TLS transport).

Streams are bounded by the server's ``SETTINGS_MAX_CONCURRENT_STREAMS``: 1 until its SETTINGS
arrive (APNs starts at 1 and raises it after the first request), then whatever it says. Frames
are written once per event-loop tick (every push of a tick in one ``write``). A GOAWAY's reason
(JSON debug data) is logged; streams the server did not process come back as ``Unprocessed`` so
that the client sends them on another connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from mdm.push.apns.h2conn import CountingH2Connection
from mdm.push.apns.reasons import goaway_reason

log = logging.getLogger("mdm.push.apns")

# Until the server's first SETTINGS frame: one stream, like APNs announces at first.
INITIAL_STREAMS = 1
# A server that announces no limit (HTTP/2 says unlimited) still gets at most this many.
MAX_STREAMS = 1000
MAX_BODY = 64 * 1024

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]


class Unprocessed(Exception):
    """The server did not process this stream (above a GOAWAY's last stream id, or the stream
    was never sent): safe to send again on another connection."""


class StreamFailed(Exception):
    """The stream failed after it may have reached the server (reset, connection lost)."""


class _Stream:
    __slots__ = ("body", "deadline", "future", "headers", "pending", "status", "timeout")

    def __init__(self, future: asyncio.Future[Answer], pending: bytes, deadline: float,
                 timeout: float) -> None:
        self.future = future
        self.status = 0
        self.headers: Headers = []
        self.body = b""
        self.pending = pending  # body bytes still waiting for flow-control window
        self.deadline = deadline  # loop time after which the stream is reset and answered "timeout"
        self.timeout = timeout


class Connection(asyncio.Protocol):
    def __init__(self, authority: bytes, on_change: Callable[[int], None], label: str) -> None:
        self.authority = authority
        self.label = label
        # Called with 1 when a stream is freed, 0 when anything else changed (the limit, closed).
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self.opened_at = time.monotonic()
        self.closed_at = 0.0
        self.graceful = False  # closed by GOAWAY or by draining, not by an error
        # (inbound normalisation only joins cookie fields, which APNs never sends)
        self._h2 = CountingH2Connection(H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False,
            normalize_inbound_headers=False,
        ))
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._blocked: deque[int] = deque()  # streams waiting for flow-control window
        self._flush_scheduled = False
        # One timer per connection, not one per stream (a timer armed and cancelled per push cost
        # ~5 µs of a ~45 µs push): it fires at the oldest stream's deadline.
        self._sweep: asyncio.TimerHandle | None = None
        self._last_deadline = 0.0
        self.max_streams = INITIAL_STREAMS
        self.closed = False
        self.draining = False  # no new streams (GOAWAY received, or replaced identity)
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.close_reason = ""

    # -- state the pool reads

    @property
    def free(self) -> int:
        if self.closed or self.draining:
            return 0
        return self.max_streams - len(self._streams)

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    # -- sending

    def request(self, headers: Headers, body: bytes, timeout: float) -> asyncio.Future[Answer]:
        """Start one stream; the future gets (status, headers, body) or raises ``Unprocessed`` /
        ``StreamFailed``. The caller checks ``free`` first."""
        return self._start(headers, body, timeout)

    def post(self, block: bytes, body: bytes, timeout: float) -> asyncio.Future[Answer]:
        """``request`` of a POST to this connection's authority whose header block is already
        encoded (``hpackfast.LiteralEncoder``'s encoding of its fields: the APNs client's pushes)."""
        return self._start(block, body, timeout)

    def _start(self, headers: Headers | bytes, body: bytes, timeout: float) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = self._loop.create_future()
        if self.closed or self.draining or self._transport is None:
            future.set_exception(Unprocessed(self.close_reason or "connection not usable"))
            return future
        h2 = self._h2
        stream_id = h2.get_next_available_stream_id()
        # Deadlines never go backwards along the streams (their order in ``_streams``), so that the
        # sweep stops at the first stream not yet due; a shorter timeout than the streams ahead
        # of it is honoured only as late as theirs.
        deadline = max(self._loop.time() + timeout, self._last_deadline)
        self._last_deadline = deadline
        stream = _Stream(future, body, deadline, timeout)
        self._streams[stream_id] = stream
        try:
            if type(headers) is bytes:
                h2.send_request(stream_id, headers, self.authority, b"POST")
            else:
                h2.send_headers(stream_id, headers)
        except H2Error as exc:
            del self._streams[stream_id]
            future.set_exception(Unprocessed(f"HTTP/2: {exc}"))
            return future
        self._send_body(stream_id, stream)
        if self._sweep is None:
            self._sweep = self._loop.call_at(deadline, self._sweep_timeouts)
        self._schedule_flush()
        return future

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        h2 = self._h2
        window = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
        if window < len(stream.pending):
            if window > 0:
                h2.send_data(stream_id, stream.pending[:window])
                stream.pending = stream.pending[window:]
            self._blocked.append(stream_id)
            return
        h2.send_data(stream_id, stream.pending, end_stream=True)
        stream.pending = b""

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self.closed:
            self._transport.write(data)

    def _sweep_timeouts(self) -> None:
        """Answer "timeout" to the streams past their deadline (each reset with CANCEL), then sleep
        until the next stream's deadline; no timer while nothing is in flight."""
        self._sweep = None
        if self.closed:
            return
        now = self._loop.time() + 0.001  # (a timer may fire a hair early: no re-arm for that)
        expired: list[tuple[int, _Stream]] = []
        upcoming = 0.0
        for stream_id, stream in self._streams.items():
            if stream.deadline > now:
                upcoming = stream.deadline
                break
            expired.append((stream_id, stream))
        for stream_id, stream in expired:
            del self._streams[stream_id]
            if not stream.future.done():
                stream.future.set_exception(
                    StreamFailed(f"timeout: no answer within {stream.timeout:g}s"))
            try:
                self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)
            except H2Error:
                pass
        if upcoming:
            self._sweep = self._loop.call_at(upcoming, self._sweep_timeouts)
        if expired:
            self._schedule_flush()
            if self.draining and not self._streams:
                self.close("drained")
            else:
                self._on_change(0)  # (several streams freed at once: every waiter looks again)

    # -- closing

    def drain(self) -> None:
        """No new streams; close once the in-flight ones are answered."""
        self.draining = True
        self.graceful = True
        if not self._streams:
            self.close("drained")

    def close(self, reason: str) -> None:
        if self.closed:
            return
        if not self.close_reason:
            self.graceful = True  # our own decision, not an error (those set close_reason first)
        if self._transport is not None:
            try:
                self._h2.close_connection()
                self._transport.write(self._h2.data_to_send())
            except H2Error:
                pass
            self._transport.close()
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        self.closed = True
        self.closed_at = time.monotonic()
        self.close_reason = self.close_reason or reason
        streams, self._streams = self._streams, {}
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for stream_id, stream in streams.items():
            if not stream.future.done():
                error: Exception = (
                    Unprocessed(reason) if stream_id in self._blocked else StreamFailed(reason)
                )
                stream.future.set_exception(error)
        self._blocked.clear()
        if not self.graceful and self._transport is not None:
            log.warning("APNs %s closed: %s", self.label, self.close_reason)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
            self.ready.exception()  # retrieved: the dialer sees the closed connection instead
        self._on_change(0)

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        self._h2.initiate_connection()
        # A large connection window: answers are small, but many arrive at once.
        self._h2.increment_flow_control_window(1 << 24)
        transport.write(self._h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        lost = f"connection lost: {exc}" if exc else "connection closed by the gateway"
        reason = self.close_reason or lost
        self._fail_all(reason)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except H2Error as exc:
            log.warning("APNs %s: HTTP/2 protocol error from the gateway: %s", self.label, exc)
            self.close_reason = f"HTTP/2 protocol error: {type(exc).__name__}"
            self.close(self.close_reason)
            return
        except Exception as exc:  # garbage bytes must not kill the event loop
            log.warning("APNs %s: unparsable data from the gateway: %s", self.label, type(exc).__name__)
            self.close_reason = "unparsable data from the gateway"
            self.close(self.close_reason)
            return
        for event in events:
            self._handle(event)
        self._schedule_flush()

    def _handle(self, event: Any) -> None:
        if isinstance(event, ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.headers = list(event.headers)
                for name, value in stream.headers:
                    if name == b":status":
                        stream.status = int(value) if value.isdigit() else 0
        elif isinstance(event, DataReceived):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self._streams.get(event.stream_id)
            if stream is not None and len(stream.body) < MAX_BODY:
                stream.body += event.data
        elif isinstance(event, StreamEnded):
            self._finish(event.stream_id, None)
        elif isinstance(event, StreamReset):
            self._finish(event.stream_id, f"stream reset by the gateway ({_code(event.error_code)})")
        elif isinstance(event, RemoteSettingsChanged):
            changed = event.changed_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
            if not self.ready.done():
                self.ready.set_result(None)
            if changed is not None:
                self.max_streams = max(1, min(MAX_STREAMS, changed.new_value))
            self._on_change(0)
        elif isinstance(event, WindowUpdated):
            self._unblock()
        elif isinstance(event, ConnectionTerminated):
            self._goaway(event)

    def _finish(self, stream_id: int, failure: str | None) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if not stream.future.done():
            if failure is None:
                stream.future.set_result((stream.status, stream.headers, stream.body))
            else:
                stream.future.set_exception(StreamFailed(failure))
        self._released()

    def _released(self) -> None:
        if self.draining and not self._streams:
            self.close("drained")
        else:
            self._on_change(1)

    def _unblock(self) -> None:
        for _ in range(len(self._blocked)):
            stream_id = self._blocked.popleft()
            stream = self._streams.get(stream_id)
            if stream is not None and stream.pending:
                self._send_body(stream_id, stream)

    def _goaway(self, event: ConnectionTerminated) -> None:
        reason = goaway_reason(event.additional_data)
        code = _code(event.error_code)
        level = logging.INFO if event.error_code == ErrorCodes.NO_ERROR and not reason else logging.WARNING
        log.log(level, "APNs %s: GOAWAY from the gateway: %s%s (last stream %s, %d in flight)",
                self.label, code, f", reason {reason}" if reason else "", event.last_stream_id,
                len(self._streams))
        self.draining = True
        self.graceful = event.error_code == ErrorCodes.NO_ERROR
        self.close_reason = f"GOAWAY {reason or code}"
        last = event.last_stream_id if event.last_stream_id is not None else 0
        for stream_id in [s for s in self._streams if s > last]:
            stream = self._streams.pop(stream_id)
            if not stream.future.done():
                stream.future.set_exception(Unprocessed(self.close_reason))
        if not self._streams:
            self.close(self.close_reason)
        else:
            self._on_change(0)


def _code(code: int | ErrorCodes | None) -> str:
    if isinstance(code, ErrorCodes):
        return code.name
    if code is None:
        return "no error code"
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error {code}"
