"""``ApnsClient``: MDM wake-ups over a small pool of long-lived HTTP/2 connections to APNs.

Each ``send`` is one stream (``POST /3/device/<token>``). The pool holds ``apns.connections``
connections, opened when first needed and reopened only when one dies (exponential backoff on
failures); each carries as many streams as the gateway allows. A credential failure (403) opens
the circuit: further sends answer ``UNAVAILABLE`` without touching the network until the
identity is replaced or ``reset_circuit`` is called. ``replace_identity`` takes a renewed
certificate with the same topic while running: new connections use it, the old ones finish their
streams and close.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import ssl
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from mdm.push.apns.connection import Connection, StreamFailed, Unprocessed
from mdm.push.apns.proxy import ProxyError, open_tunnel
from mdm.push.apns.push_headers import PushHeaders
from mdm.push.apns.reasons import classify, retry_after_of
from mdm.push.apns.tls import client_context
from mdm.push.circuit import Circuit
from mdm.push.config import ApnsConfig
from mdm.push.stats import TransportStats
from mdm.push.types import ApnsIdentity, Outcome, ProxySettings, PushResult, WakeTarget

log = logging.getLogger("mdm.push.apns")

_TOKEN = re.compile(r"[0-9a-fA-F]+")
MAX_TOKEN = 200
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 60.0
STABLE_SECONDS = 10.0  # a connection that dies of an error younger than this counts as a failure
ATTEMPTS = 3  # sends of one push when the gateway did not process it (GOAWAY, unusable connection)


@dataclass
class ApnsStats(TransportStats):
    """The client's counters, and its connections opened and failed."""

    connects: int = 0
    connect_failures: int = 0


class _Slot:
    """One place in the pool: its connection, or the backoff after a failed connect."""

    __slots__ = ("connecting", "connection", "failures", "last_error", "retry_at")

    def __init__(self) -> None:
        self.connection: Connection | None = None
        self.connecting: asyncio.Task[Connection] | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""


class ApnsClient:
    def __init__(
        self,
        config: ApnsConfig,
        identity: ApnsIdentity,
        *,
        proxy: ProxySettings | None = None,
        ssl_ca: str | None = None,
    ) -> None:
        self.config = config
        self._identity = identity
        self._proxy = proxy
        self._ca = ssl_ca if ssl_ca is not None else (config.ca_file or None)
        url = urlsplit(config.endpoint())
        self._host = url.hostname or "api.push.apple.com"
        self._port = url.port or 443
        authority = self._host if self._port == 443 else f"{self._host}:{self._port}"
        self._authority = authority.encode()
        self._headers = PushHeaders(self._authority, identity.topic)
        self._context_task: asyncio.Future[ssl.SSLContext] | None = None
        self._slots = [_Slot() for _ in range(config.connections)]
        self._old: list[Connection] = []  # draining after a replaced identity
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._circuit = Circuit("APNs")
        self._closed = False
        self._generation = 0
        self.stats = ApnsStats()

    # -- circuit breaker

    @property
    def circuit_open(self) -> bool:
        return self._circuit.is_open

    @property
    def circuit_reason(self) -> str:
        return self._circuit.reason

    def reset_circuit(self) -> None:
        self._circuit.reset()

    @property
    def identity(self) -> ApnsIdentity:
        """The identity new connections use (the renewed one after ``replace_identity``)."""
        return self._identity

    @property
    def topic(self) -> str:
        return self._identity.topic

    # -- sending

    async def send(self, target: WakeTarget, *, expires: datetime | None = None) -> PushResult:
        result = await self._send(target, expires)
        self.stats.record(result)
        return result

    async def _send(self, target: WakeTarget, expires: datetime | None) -> PushResult:
        token = target.token
        if not token or len(token) > MAX_TOKEN or len(token) % 2 or not _TOKEN.fullmatch(token):
            return PushResult(Outcome.REJECTED, "BadDeviceToken (not hex)")
        if self._closed:
            return PushResult(Outcome.UNAVAILABLE, "APNs client closed")
        refused = self._circuit.refusal()
        if refused is not None:
            return refused
        if expires is None:
            seconds = self.config.expiration_seconds
            expiration = int(time.time()) + seconds if seconds else 0
        else:
            expiration = max(0, int(expires.timestamp()))
        block = self._headers.block(token, expiration)
        body = b'{"mdm":"' + _json_string(target.push_magic) + b'"}'
        reason = ""
        for _ in range(ATTEMPTS):
            # (a free stream on an open connection, the common case, without a coroutine)
            connection = self._choose()
            if not isinstance(connection, Connection):
                connection = await self._acquire(connection)
            if isinstance(connection, PushResult):
                return connection
            try:
                status, answer_headers, answer = await connection.post(
                    block, body, self.config.timeout_seconds)
            except Unprocessed as exc:
                reason = str(exc)
                continue
            except StreamFailed as exc:
                return PushResult(Outcome.RETRY, str(exc))
            apns_id = retry = None
            for name, value in answer_headers:
                if name == b"apns-id":
                    apns_id = value.decode("ascii", "replace")
                elif name == b"retry-after":
                    retry = value
            result = classify(status, answer, apns_id, retry_after_of(retry))
            if result.outcome is Outcome.CREDENTIALS:
                self._open_circuit(result.reason)
            elif result.outcome is not Outcome.SENT:
                log.debug("APNs push to %s…: %s %s", token[:8], status, result.reason)
            return result
        return PushResult(Outcome.RETRY, f"not processed by the gateway: {reason}")

    def _open_circuit(self, reason: str) -> None:
        self._circuit.open(reason, f"APNs refused the push certificate ({reason}, topic "
                           f"{self._identity.topic}): no push is sent until it is replaced "
                           "(mdm push apns set-cert)")

    def _choose(self) -> Connection | PushResult | _Slot | None:
        """A connection with a free stream (the one with the most), a ``PushResult`` when none can
        be had now (closed, or every slot failing and backing off), else the idle slot to dial or
        None (every stream busy: wait)."""
        if self._closed:
            return PushResult(Outcome.UNAVAILABLE, "APNs client closed")
        best: Connection | None = None
        idle: _Slot | None = None
        now = time.monotonic()
        error = ""
        live = False
        for slot in self._slots:
            connection = slot.connection
            if connection is not None and (connection.closed or connection.draining):
                self._retire(slot, connection)
                connection = None
            if connection is not None:
                live = True
                if connection.free > 0 and (best is None or connection.free > best.free):
                    best = connection
            elif slot.connecting is not None:
                live = True
            elif slot.retry_at <= now:
                idle = idle or slot
            else:
                error = slot.last_error
        if error and not live:
            # The gateway (or proxy) failed us a moment ago: no new attempt before the backoff.
            return PushResult(Outcome.RETRY, f"{error} (reconnecting with backoff)")
        if best is not None:
            # Open the other connections as the load grows, not before.
            if idle is not None and best.in_flight >= best.max_streams // 2 and best.max_streams > 1:
                self._connect(idle)
            return best
        return idle

    async def _acquire(self, chosen: Connection | PushResult | _Slot | None) -> Connection | PushResult:
        """A connection with a free stream; dials an idle slot, or waits while every stream is
        busy (``chosen``: what ``_choose`` answered a moment ago)."""
        while True:
            if isinstance(chosen, (Connection, PushResult)):
                return chosen
            if chosen is not None:
                task = self._connect(chosen)
                # (wait, not shield: the dial's failure or cancellation is not this caller's)
                await asyncio.wait([task])
                if task.cancelled() or task.exception() is not None:
                    if not any(s.connection is not None and not s.connection.closed for s in self._slots):
                        return PushResult(Outcome.RETRY, chosen.last_error or "connect cancelled")
            else:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    async with asyncio.timeout(self.config.timeout_seconds):
                        await waiter
                except TimeoutError:
                    return PushResult(Outcome.RETRY, "timeout: no free HTTP/2 stream")
                finally:
                    if not waiter.done():
                        waiter.cancel()
            chosen = self._choose()

    def _retire(self, slot: _Slot, connection: Connection) -> None:
        """A connection that died (or drains): the slot reconnects, after a backoff when it died
        of an error soon after opening (no reconnect storm against a failing gateway)."""
        slot.connection = None
        if connection.draining and not connection.closed:
            self._old = [c for c in self._old if not c.closed]
            self._old.append(connection)
            return
        if not connection.graceful and connection.closed_at - connection.opened_at < STABLE_SECONDS:
            slot.failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (slot.failures - 1)) * random.uniform(0.8, 1.2)  # noqa: S311
            slot.retry_at = connection.closed_at + delay
            slot.last_error = connection.close_reason
        else:
            slot.failures = 0

    def _changed(self, freed: int = 0) -> None:
        """A freed stream wakes one waiter; a raised limit or a closed connection wakes them all."""
        waiters = self._waiters
        if freed:
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
            return
        self._waiters = deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _connect(self, slot: _Slot) -> asyncio.Task[Connection]:
        if slot.connecting is None:
            task = asyncio.get_running_loop().create_task(self._open(slot))
            task.add_done_callback(_retrieve)  # failures are logged and kept in the slot
            slot.connecting = task
        return slot.connecting

    async def _open(self, slot: _Slot) -> Connection:
        generation = self._generation
        label = f"connection {self._slots.index(slot) + 1}/{len(self._slots)}"
        try:
            connection = await self._dial(label)
        except Exception as exc:
            slot.failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (slot.failures - 1)) * random.uniform(0.8, 1.2)  # noqa: S311
            slot.retry_at = time.monotonic() + delay
            slot.last_error = _describe(exc)
            self.stats.connect_failures += 1
            log.warning("APNs %s to %s:%d failed: %s; next attempt in %.1fs", label, self._host,
                        self._port, slot.last_error, delay)
            raise
        finally:
            slot.connecting = None
            self._changed()
        if generation != self._generation or self._closed:
            connection.drain()
            self._old.append(connection)
        else:
            slot.connection = connection
            slot.failures = 0
            slot.last_error = ""
        self.stats.connects += 1
        log.info("APNs %s open to %s:%d (%d streams)", label, self._host, self._port, connection.max_streams)
        return connection

    async def _dial(self, label: str) -> Connection:
        loop = asyncio.get_running_loop()
        context = await self._context()
        timeout = self.config.timeout_seconds
        connection = Connection(self._authority, self._changed, label)
        try:
            async with asyncio.timeout(timeout):
                if self._proxy is not None:
                    sock = await open_tunnel(self._proxy, self._host, self._port, timeout)
                    await loop.create_connection(lambda: connection, sock=sock, ssl=context,
                                                 server_hostname=self._host)
                else:
                    await loop.create_connection(lambda: connection, self._host, self._port, ssl=context)
                await asyncio.shield(connection.ready)
        except BaseException:
            connection.close("connect failed")
            raise
        return connection

    async def _context(self) -> ssl.SSLContext:
        if self._context_task is None:
            identity, ca = self._identity, self._ca
            self._context_task = asyncio.ensure_future(asyncio.to_thread(client_context, identity, ca))
        return await asyncio.shield(self._context_task)

    # -- identity

    async def replace_identity(self, identity: ApnsIdentity) -> None:
        if identity.topic != self._identity.topic:
            raise ValueError(
                f"the new push certificate's topic {identity.topic} is not the current one "
                f"({self._identity.topic}): every enrolled device would have to re-enroll to be pushed "
                "with it; renew the certificate for the same topic (same Apple ID) instead"
            )
        context = await asyncio.to_thread(client_context, identity, self._ca)
        self._identity = identity
        done: asyncio.Future[ssl.SSLContext] = asyncio.get_running_loop().create_future()
        done.set_result(context)
        self._context_task = done
        self._generation += 1
        for slot in self._slots:
            if slot.connection is not None:
                self._old.append(slot.connection)
                slot.connection.drain()
                slot.connection = None
            slot.failures = 0
            slot.retry_at = 0.0
        self._old = [c for c in self._old if not c.closed]
        self.reset_circuit()
        log.info("APNs push certificate replaced (topic %s, valid until %s); old connections drain",
                 identity.topic, f"{identity.not_after:%Y-%m-%d}")
        self._changed()

    async def close(self) -> None:
        self._closed = True
        for slot in self._slots:
            if slot.connecting is not None:
                slot.connecting.cancel()
            if slot.connection is not None:
                slot.connection.close("client closed")
        for connection in self._old:
            connection.close("client closed")
        self._changed()
        await asyncio.sleep(0)


def _retrieve(task: asyncio.Task[Connection]) -> None:
    if not task.cancelled():
        task.exception()


def _json_string(text: str) -> bytes:
    """``text`` inside a JSON string. A push magic is a UUID: printable ASCII without quotes or
    backslashes is its own JSON, json.dumps is for anything else."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text.encode()
    return json.dumps(text)[1:-1].encode()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProxyError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "connect timed out"
    if isinstance(exc, ConnectionError) and str(exc):
        return f"connection failed: {exc}"
    if isinstance(exc, OSError):
        return f"connect failed: {exc.strerror or type(exc).__name__}"
    return f"connect failed: {type(exc).__name__}: {exc}"
