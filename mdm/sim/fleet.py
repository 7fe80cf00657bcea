"""Many simulated devices at once, as a load generator (``mdm bench ios``).

A fleet member is a lightweight device: hardware facts, an identity and, once checked in, the
server's device id. Its idle poll (body + ``Mdm-Signature``) is signed once and reused until it
nears the server's replay window, which is what a real device's identical Idle bodies look like.
The full command behaviour (``mdm.sim.behaviour``) is attached only to members that receive
commands. The HTTP client is aiohttp: with keep-alive it costs the generator a fraction of what
httpx does, which matters when generator and server share two cores.
"""

from __future__ import annotations

import asyncio
import itertools
import plistlib
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography import x509

from mdm.sim.behaviour import answer
from mdm.sim.facts import HardwareFacts
from mdm.sim.identity import Identity
from mdm.sim.state import DeviceState
from mdm.sim.stats import Samples
from mdm.sim.transport import CHECKIN_TYPE, COMMAND_TYPE, Mode, client_context, encode

# Re-sign idle bodies older than this (the server's default replay window is 600 s).
RESIGN_AFTER = 240.0


@dataclass
class Member:
    facts: HardwareFacts
    identity: Identity
    device_id: int | None = None
    state: DeviceState | None = None
    _idle: tuple[bytes, dict[str, str], float] | None = field(default=None, repr=False)

    @property
    def udid(self) -> str:
        return self.facts.udid

    def signed(
        self, message: dict[str, Any], content_type: str, sign: bool = True
    ) -> tuple[bytes, dict[str, str]]:
        body = encode(message)
        headers = {"Content-Type": content_type}
        if sign:
            headers["Mdm-Signature"] = self.identity.sign(body)
        return body, headers

    def idle_request(self, sign: bool = True) -> tuple[bytes, dict[str, str]]:
        now = time.monotonic()
        if self._idle is None or now - self._idle[2] > RESIGN_AFTER:
            body, headers = self.signed({"Status": "Idle", "UDID": self.udid}, COMMAND_TYPE, sign)
            self._idle = (body, headers, now)
        return self._idle[0], self._idle[1]

    def presign(self) -> None:
        """Sign the idle poll now (a fresh signing time), so that ``idle_request`` costs nothing."""
        body, headers = self.signed({"Status": "Idle", "UDID": self.udid}, COMMAND_TYPE)
        self._idle = (body, headers, time.monotonic())

    def device_state(self) -> DeviceState:
        if self.state is None:
            self.state = DeviceState(facts=self.facts, identity=self.identity.certificate)
        return self.state


class FleetError(Exception):
    pass


class Fleet:
    def __init__(
        self,
        members: Sequence[Member],
        *,
        server_url: str,
        checkin_url: str,
        topic: str,
        mode: Mode = "signature",
        trusted_roots: Sequence[x509.Certificate] = (),
        concurrency: int = 50,
        timeout: float = 30.0,
    ) -> None:
        self.members = list(members)
        self.server_url = server_url
        self.checkin_url = checkin_url
        self.topic = topic
        self.mode = mode
        self.concurrency = concurrency
        self.trusted_roots = list(trusted_roots)
        self._ssl: ssl.SSLContext | None = (
            client_context(self.trusted_roots) if server_url.startswith("https") else None
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    # ---- sessions ------------------------------------------------------------------------------
    def _new_session(self, ssl_context: ssl.SSLContext | None, limit: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limit, ssl=ssl_context if ssl_context else False, keepalive_timeout=60
        )
        return aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._new_session(self._ssl, self.concurrency)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _put(
        self, session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        async with session.put(url, data=body, headers=headers) as response:
            return response.status, await response.read()

    # ---- check-in ------------------------------------------------------------------------------
    async def check_in(self, member: Member, session: aiohttp.ClientSession | None = None) -> None:
        session = session or self.session
        token = member.udid.encode().ljust(32, b"\0")[:32]
        for message in (
            {"MessageType": "Authenticate", "Topic": self.topic, **member.facts.checkin_identity()},
            {
                "MessageType": "TokenUpdate",
                "Topic": self.topic,
                "UDID": member.udid,
                "Token": token,
                "PushMagic": member.facts.device_id,
                "UnlockToken": member.device_state().unlock_token,
                "AwaitingConfiguration": False,
            },
        ):
            body, headers = member.signed(message, CHECKIN_TYPE)
            status, text = await self._put(session, self.checkin_url, body, headers)
            if status != 200:
                raise FleetError(f"{member.udid}: {message['MessageType']} answered {status}: {text[:200]!r}")

    async def check_in_all(
        self, members: Sequence[Member], progress: Callable[[int], None] | None = None
    ) -> None:
        """Authenticate + TokenUpdate for every member (identities are bound by the server here)."""
        queue = iter(members)
        done = 0

        async def worker() -> None:
            nonlocal done
            for member in queue:
                await self.check_in(member)
                done += 1
                if progress and done % 500 == 0:
                    progress(done)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    def presign(self, members: Sequence[Member]) -> None:
        """Sign every member's idle poll now: a real device signs on its own CPU, these share the
        server's cores, so a timed phase signs nothing (``mdm.bench.fleet_cold``)."""
        for member in members:
            member.presign()

    async def warm_up(self, members: Sequence[Member] | None = None) -> Samples:
        """One signed idle poll per member (fills the server's per-certificate caches the way a
        fleet that has been running for a while has, and signs every idle body not yet signed:
        ``presign`` first to keep the signing out of the timing)."""
        pool = iter(list(members) if members is not None else self.members)
        samples = Samples()
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def worker() -> None:
            for member in pool:
                body, headers = member.idle_request()
                await self._timed(self.session, body, headers, samples)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        samples.elapsed = loop.time() - start
        return samples

    # ---- idle load -----------------------------------------------------------------------------
    async def idle_load(
        self,
        duration: float,
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        stop: asyncio.Event | None = None,
        polls_per_connection: int = 20,
        members: Sequence[Member] | None = None,
        samples: Samples | None = None,
    ) -> Samples:
        """Idle polls for ``duration`` seconds from ``concurrency`` connections, as fast as the server
        answers (closed loop) or at ``rate`` polls per second in total (open loop), cycling through
        ``members`` (default: the whole fleet). ``samples``: fill these (a caller reporting progress
        reads them meanwhile)."""
        pool = list(members) if members is not None else self.members
        workers = concurrency or self.concurrency
        samples = Samples() if samples is None else samples
        order = itertools.count()
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + duration
        interval = workers / rate if rate else 0.0

        def done() -> bool:
            return loop.time() >= deadline or (stop is not None and stop.is_set())

        async def signed_worker(offset: int) -> None:
            session = self.session
            next_at = start + (offset * interval / workers if interval else 0.0)
            while not done():
                if interval:
                    delay = next_at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                        if done():
                            return
                    next_at += interval
                member = pool[next(order) % len(pool)]
                body, headers = member.idle_request()
                await self._timed(session, body, headers, samples)

        async def mtls_worker(offset: int) -> None:
            # A client certificate belongs to one device: each connection serves one member
            # for a few polls, then the next member connects (a fresh TLS handshake).
            while not done():
                member = pool[next(order) % len(pool)]
                ctx = client_context(self.trusted_roots, member.identity)
                async with self._new_session(ctx, 1) as session:
                    for _ in range(polls_per_connection):
                        if done():
                            break
                        body, headers = member.idle_request(sign=False)
                        await self._timed(session, body, headers, samples)

        worker = mtls_worker if self.mode == "mtls" else signed_worker
        await asyncio.gather(*(worker(i) for i in range(workers)))
        samples.elapsed = loop.time() - start
        return samples

    async def _timed(
        self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str], samples: Samples
    ) -> None:
        t0 = time.perf_counter()
        try:
            status, payload = await self._put(session, self.server_url, body, headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            samples.error(type(exc).__name__)
            return
        if status != 200:
            samples.error(f"http_{status}")
        elif payload.strip():
            samples.error("unexpected_command")
        else:
            samples.add(time.perf_counter() - t0)

    # ---- commands ------------------------------------------------------------------------------
    async def poll_and_answer(
        self,
        member: Member,
        session: aiohttp.ClientSession | None = None,
        max_commands: int = 20,
        timings: list[float] | None = None,
    ) -> list[tuple[str, str]]:
        """One device session: Idle, then answer every command with the device behaviour
        (``timings`` collects the seconds each request of the session took)."""
        session = session or self.session
        sign = self.mode == "signature"
        message: dict[str, Any] = {"Status": "Idle", "UDID": member.udid}
        statuses: list[tuple[str, str]] = []
        for _ in range(max_commands):
            if message.get("Status") == "Idle":
                body, headers = member.idle_request(sign)
            else:
                body, headers = member.signed(message, COMMAND_TYPE, sign)
            t0 = time.perf_counter()
            status, payload = await self._put(session, self.server_url, body, headers)
            if timings is not None:
                timings.append(time.perf_counter() - t0)
            if status != 200:
                raise FleetError(f"{member.udid}: command channel answered {status}: {payload[:200]!r}")
            if not payload.strip():
                break
            try:
                command: Any = plistlib.loads(payload)
            except Exception:
                command = None
            message = answer(member.device_state(), command)
            request = command.get("Command", {}).get("RequestType", "?") if isinstance(command, dict) else "?"
            statuses.append((str(request), str(message["Status"])))
        return statuses

    async def round_trip(
        self, member: Member, enqueue: Callable[[Member], Awaitable[str]]
    ) -> tuple[float, str, list[float]]:
        """Enqueue (admin API) -> the device polls at once (standing in for the push) -> answer
        accepted. Returns the elapsed seconds, the command id, and the seconds of each step
        (enqueue, then every command-channel request)."""
        t0 = time.perf_counter()
        guid = await enqueue(member)
        steps = [time.perf_counter() - t0]
        if self.mode == "mtls":
            ctx = client_context(self.trusted_roots, member.identity)
            async with self._new_session(ctx, 1) as session:
                statuses = await self.poll_and_answer(member, session, timings=steps)
        else:
            statuses = await self.poll_and_answer(member, timings=steps)
        elapsed = time.perf_counter() - t0
        if not statuses:
            raise FleetError(f"{member.udid}: the command {guid} was not delivered on the first poll")
        if statuses[0][1] != "Acknowledged":
            raise FleetError(f"{member.udid}: {statuses[0][0]} answered {statuses[0][1]}")
        return elapsed, guid, steps
