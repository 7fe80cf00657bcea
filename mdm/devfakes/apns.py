"""The APNs contract fake: Apple's HTTP/2 provider API for MDM pushes, over mutual TLS.

It requires a client certificate issued by the push CA it is given and takes the topic from its
subject UID; validates method, path, headers and body like the gateway and answers every error
with Apple's status and ``{"reason": ...}`` ("Handling notification responses from APNs").
Each connection starts with ``SETTINGS_MAX_CONCURRENT_STREAMS = 1`` and raises it after the first
request, like APNs. Controls (``unregister``, ``throttle``, ``fail``, ``refuse``, ``goaway``,
``drop_connections``, ``stall``, ``garbage``, ``reset``) make it misbehave on purpose;
``on_push`` sees every accepted wake-up (end-to-end tests forward it to device simulators), and
``watch`` lists the accepted pushes of chosen tokens, in order, for a process that drives those
devices from outside (``mdm bench fleet``, through the control endpoint).

The usual request (one HEADERS and one DATA frame, both in hand) is taken without h2's objects and
answered with the same bytes (``apns_h2``; ``fast_path=False`` keeps every request on h2's path),
while no control is set to misbehave at the answer.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings

from mdm.devfakes import apns_h2
from mdm.push.apns.h2conn import CountingH2Connection

log = logging.getLogger("mdm.devfakes.apns")

_HEX = re.compile(rb"[0-9a-fA-F]+")
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_PAYLOAD = 4096
_STATUS = {status: (b":status", str(status).encode()) for status in (200, 400, 403, 404, 405, 410, 413, 429,
                                                                   500, 503)}
OnPush = Callable[[str, str, dict[str, Any]], Awaitable[None] | None]


@dataclass(frozen=True)
class Accepted:
    token: str
    topic: str
    body: dict[str, Any]
    apns_id: str
    expiration: int
    priority: int


@dataclass
class Controls:
    unregistered: dict[str, int] = field(default_factory=dict)  # token -> ms timestamp
    bad_tokens: set[str] = field(default_factory=set)
    token_topics: dict[str, str] = field(default_factory=dict)  # token -> the topic it belongs to
    throttle: int = 0
    fail: int = 0
    fail_status: int = 500
    refuse_reason: str = ""  # 403 for every request while set
    goaway_reason: str = ""
    stall_until: float = 0.0
    garbage: int = 0
    reset: int = 0


class FakeApns:
    def __init__(
        self,
        *,
        push_ca: Path | str,
        server_cert: Path | str,
        server_key: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        raise_streams_to: int = 1000,
        initial_window: int = 65535,
        record: bool = True,
        on_push: OnPush | None = None,
        fast_path: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.raise_streams_to = raise_streams_to
        self.initial_window = initial_window  # per-stream flow-control window it announces
        self.record = record
        self.on_push = on_push
        self.fast_path = fast_path  # the usual request without h2's objects (``apns_h2``)
        self.fast_requests = 0  # requests taken that way
        self.controls = Controls()
        self.accepted: list[Accepted] = []
        self.count = 0  # accepted pushes
        self.requests = 0  # every request, answered or not
        self.answers: dict[int, int] = {}  # status -> count
        self.max_concurrent = 0  # most streams one connection had open at once
        self.connections_seen = 0
        self.refused_streams = 0  # streams beyond SETTINGS_MAX_CONCURRENT_STREAMS (a client bug)
        self.watched: set[str] = set()
        self.woken: list[str] = []  # watched tokens, once per accepted push, in order
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(push_ca))
        self._context.verify_mode = ssl.CERT_REQUIRED
        self._context.load_cert_chain(str(server_cert), str(server_key))
        self._context.set_alpn_protocols(["h2"])
        self._server: asyncio.Server | None = None
        self._connections: set[_FakeConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _FakeConnection(self), self.host, self.port,
                                                ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    # -- controls

    def unregister(self, token: str, when_ms: int | None = None) -> None:
        """410 Unregistered with the time the token became invalid."""
        when = when_ms if when_ms is not None else int(time.time() * 1000)
        self.controls.unregistered[token.lower()] = when

    def bad_token(self, token: str) -> None:
        self.controls.bad_tokens.add(token.lower())

    def token_topic(self, token: str, topic: str) -> None:
        self.controls.token_topics[token.lower()] = topic

    def watch(self, tokens: list[str]) -> None:
        """Record the accepted pushes to these tokens in ``woken`` (bounded by what is watched)."""
        self.watched.update(t.lower() for t in tokens)

    def throttle(self, n: int) -> None:
        self.controls.throttle = n

    def fail(self, n: int, status: int = 500) -> None:
        self.controls.fail, self.controls.fail_status = n, status

    def refuse(self, reason: str = "BadCertificate") -> None:
        """403 with this reason for every request ("" to stop)."""
        self.controls.refuse_reason = reason

    def goaway(self, reason: str = "Shutdown") -> None:
        """At the next request: GOAWAY (debug data ``{"reason": ...}``) without processing it."""
        self.controls.goaway_reason = reason

    def drop_connections(self) -> None:
        for connection in list(self._connections):
            connection.abort()

    def stall(self, seconds: float) -> None:
        """Requests arriving in the next ``seconds`` are never answered."""
        self.controls.stall_until = time.monotonic() + seconds

    def garbage(self, n: int = 1) -> None:
        """The next ``n`` requests get an invalid HTTP/2 frame instead of an answer (the connection
        dies)."""
        self.controls.garbage = n

    def reset(self, n: int = 1) -> None:
        """The next ``n`` requests get RST_STREAM (INTERNAL_ERROR) instead of an answer."""
        self.controls.reset = n

    # -- the request

    def answer(self, topic: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, str, str]:
        """(status, reason, apns-id) for one request, as the gateway would."""
        self.requests += 1
        values: dict[bytes, bytes] = {}
        for name, value in headers:
            if name in values:
                return 400, "DuplicateHeaders", ""
            values[name] = value
        apns_id = values.get(b"apns-id", b"").decode("latin-1")
        if apns_id:
            if not _CANONICAL_UUID.fullmatch(apns_id):  # (the usual form, checked cheaply)
                try:
                    uuid.UUID(apns_id)
                except ValueError:
                    return 400, "BadMessageId", ""
        else:
            apns_id = str(uuid.uuid4()).upper()
        c = self.controls
        if values.get(b":method") != b"POST":
            return 405, "MethodNotAllowed", apns_id
        path = values.get(b":path", b"")
        if not path.startswith(b"/3/device/"):
            return 404, "BadPath", apns_id
        raw_token = path[len(b"/3/device/"):]
        if not raw_token:
            return 400, "MissingDeviceToken", apns_id
        if not _HEX.fullmatch(raw_token) or len(raw_token) % 2 or len(raw_token) > 200:
            return 400, "BadDeviceToken", apns_id
        token = raw_token.decode().lower()
        requested = values.get(b"apns-topic", b"").decode("utf-8", "replace")
        if not requested:
            return 400, "MissingTopic", apns_id
        if c.refuse_reason:
            return 403, c.refuse_reason, apns_id
        if requested != topic:
            return 400, "TopicDisallowed", apns_id
        if values.get(b"apns-push-type") != b"mdm":
            return 400, "InvalidPushType", apns_id
        priority = values.get(b"apns-priority", b"10")
        if priority not in (b"10", b"5"):
            return 400, "BadPriority", apns_id
        expiration = values.get(b"apns-expiration", b"0")
        if not expiration.isdigit():
            return 400, "BadExpirationDate", apns_id
        if not body:
            return 400, "PayloadEmpty", apns_id
        if len(body) > MAX_PAYLOAD:
            return 413, "PayloadTooLarge", apns_id
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "PayloadEmpty", apns_id
        if not isinstance(payload, dict) or not isinstance(payload.get("mdm"), str):
            return 400, "PayloadEmpty", apns_id
        if token in c.bad_tokens:
            return 400, "BadDeviceToken", apns_id
        if c.token_topics.get(token, topic) != topic:
            return 400, "DeviceTokenNotForTopic", apns_id
        if token in c.unregistered:
            return 410, "Unregistered", apns_id
        if c.throttle > 0:
            c.throttle -= 1
            return 429, "TooManyRequests", apns_id
        if c.fail > 0:
            c.fail -= 1
            reason = "InternalServerError" if c.fail_status == 500 else "ServiceUnavailable"
            return c.fail_status, reason, apns_id
        self.count += 1
        if token in self.watched:
            self.woken.append(token)
        if self.record:
            self.accepted.append(Accepted(token, topic, payload, apns_id, int(expiration), int(priority)))
        if self.on_push is not None:
            outcome = self.on_push(token, topic, payload)
            if inspect.isawaitable(outcome):
                task = asyncio.ensure_future(outcome)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return 200, "", apns_id


class _FakeConnection(asyncio.Protocol):
    def __init__(self, fake: FakeApns) -> None:
        self.fake = fake
        # Header checks are the fake's own (``answer``), in Apple's terms rather than h2's.
        self.h2 = CountingH2Connection(H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False,
            normalize_inbound_headers=False, validate_outbound_headers=False,
            normalize_outbound_headers=False,
        ))
        self.transport: asyncio.Transport | None = None
        self.topic = ""
        # stream id -> (headers, body, taken the short way: no h2 stream)
        self.requests: dict[int, tuple[list[tuple[bytes, bytes]], bytes | bytearray, bool]] = {}
        self.raised = False
        self.last_answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        self.fake._connections.add(self)
        self.fake.connections_seen += 1
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if der:
            cert = x509.load_der_x509_certificate(der)
            uids = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
            self.topic = str(uids[0].value) if uids else ""
        # APNs announces one stream at first and raises the limit after the first request.
        self.h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: 1,
            SettingCodes.MAX_HEADER_LIST_SIZE: 8000,
            SettingCodes.INITIAL_WINDOW_SIZE: self.fake.initial_window,
        })
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.fake._connections.discard(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        c = self.fake.controls
        # The short way only while nothing is set to misbehave at the answer (stall, goaway,
        # garbage, reset): a request taken that way is answered in this batch.
        fast = (self.fake.fast_path and not (c.goaway_reason or c.garbage or c.reset)
                and (not c.stall_until or time.monotonic() >= c.stall_until))
        try:
            events = apns_h2.receive_data(self.h2, data) if fast else self.h2.receive_data(data)
        except H2Error as exc:
            log.info("APNs fake: HTTP/2 error from the client: %s", exc)
            if self.transport is not None:
                self.transport.write(self.h2.data_to_send())
            self.abort()
            return
        done: list[int] = []
        requests = self.requests
        for event in events:
            if type(event) is apns_h2.FastRequest:  # (RequestReceived, DataReceived, StreamEnded)
                self.fake.fast_requests += 1
                if len(requests) >= self.h2.local_settings.max_concurrent_streams:
                    self.fake.refused_streams += 1
                    apns_h2.refuse(self.h2, event.stream_id)
                else:
                    requests[event.stream_id] = (event.headers, event.body, True)
                apns_h2.ack(self.h2, event)
                done.append(event.stream_id)
            elif isinstance(event, RequestReceived):
                if len(requests) >= self.h2.local_settings.max_concurrent_streams:
                    self.fake.refused_streams += 1
                    self.h2.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
                    continue
                requests[event.stream_id] = (list(event.headers), bytearray(), False)
            elif isinstance(event, DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                request = requests.get(event.stream_id)
                if request is not None:
                    cast(bytearray, request[1]).extend(event.data)
            elif isinstance(event, StreamEnded):
                done.append(event.stream_id)
            elif isinstance(event, StreamReset):
                requests.pop(event.stream_id, None)
        if len(requests) > self.fake.max_concurrent:
            self.fake.max_concurrent = len(requests)
        if done:
            self._answer(done)
        if self.transport is not None:
            self.transport.write(self.h2.data_to_send())

    def _answer(self, stream_ids: list[int]) -> None:
        fake, c = self.fake, self.fake.controls
        if c.goaway_reason:
            reason, c.goaway_reason = c.goaway_reason, ""
            self.h2.close_connection(ErrorCodes.NO_ERROR, json.dumps({"reason": reason}).encode(),
                                     last_stream_id=self.last_answered)
            assert self.transport is not None
            self.transport.write(self.h2.data_to_send())
            self.transport.close()
            return
        if c.garbage > 0:
            c.garbage -= 1
            assert self.transport is not None
            # A SETTINGS frame on a stream: no HTTP/2 peer may accept it.
            self.transport.write(b"\x00\x00\x06\x04\x00\x00\x00\x00\x01garbag")
            self.transport.close()
            return
        if time.monotonic() < c.stall_until:
            return  # never answered
        for stream_id in stream_ids:
            request = self.requests.pop(stream_id, None)
            if request is None:
                continue
            if c.reset > 0:
                c.reset -= 1
                self.h2.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
                continue
            status, reason, apns_id = fake.answer(self.topic, request[0], bytes(request[1]))
            fake.answers[status] = fake.answers.get(status, 0) + 1
            headers = [_STATUS.get(status) or (b":status", str(status).encode())]
            if apns_id:
                headers.append((b"apns-id", apns_id.encode()))
            if stream_id > self.last_answered:
                self.last_answered = stream_id
            if status == 200:
                if request[2]:
                    apns_h2.answer(self.h2, stream_id, headers, None)
                else:
                    self.h2.send_headers(stream_id, headers, end_stream=True)
                continue
            error: dict[str, Any] = {"reason": reason}
            if status == 410:
                error["timestamp"] = c.unregistered.get(_token_of(request[0]), int(time.time() * 1000))
            body = json.dumps(error).encode()
            headers.append((b"content-type", b"application/json"))
            if request[2]:
                apns_h2.answer(self.h2, stream_id, headers, body)
            else:
                self.h2.send_headers(stream_id, headers)
                self.h2.send_data(stream_id, body, end_stream=True)
        if not self.raised:
            self.raised = True
            self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: fake.raise_streams_to})


def _token_of(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b":path":
            return value.rsplit(b"/", 1)[-1].decode("latin-1").lower()
    return ""
