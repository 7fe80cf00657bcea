"""The load generator of ``mdm bench kes``: worker processes, each driving its share of the
devices over mutual TLS with the agent's own client (``mdm.sim.kes.http``: the SPKI pin checked
on every connection), one steady sync after another.

Each device syncs at a fixed pace (``period`` seconds between the starts of its syncs, staggered
across devices), so the offered rate is ``devices / period`` whatever the latency (an open loop:
a slow server does not slow the offered load down; it shows in the latency and in ``missed``, the
slots a device skipped because its previous sync was still unanswered, or answered less than
``gap`` ago: the server's minimum spacing, which an agent respects from the end of its previous
sync, so that a late answer does not make the next sync a refused one; a device has one sync in
flight at a time, as an agent does). Modes: ``reuse`` (each device keeps its connection alive
between syncs, as an agent does) and ``handshake`` (a new connection, a full TLS handshake with
no session resumption, per sync). Latency is measured from writing the request to reading the
whole answer.

A worker sets up (TLS contexts, then per device two untimed syncs: the first receives any policy,
the second reports it applied, as every later sync does), says it is ready, waits for the common
start time and measures until the end time. Workers run on uvloop when it is installed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import ssl
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mdm.sim.kes import http, protocol
from mdm.sim.kes.facts import AndroidFacts
from mdm.sim.kes.state import AgentState

Mode = Literal["reuse", "handshake"]


@dataclass
class DeviceSpec:
    device_id: int
    cert_pem: bytes  # certificate then chain
    key_pem: bytes


@dataclass
class WorkerSpec:
    host: str
    port: int
    pins: tuple[bytes, ...]
    devices: list[DeviceSpec]
    mode: Mode
    period: float  # seconds between the starts of one device's syncs
    duration: float
    gap: float = 0.0  # at least this long between an answer and the device's next sync
    timeout: float = 10.0


@dataclass
class WorkerResult:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    missed: int = 0  # slots skipped: the device's previous sync was still unanswered
    handshakes: int = 0
    cpu_seconds: float = 0.0
    setup_errors: Counter[str] = field(default_factory=Counter)


def context_for(device: DeviceSpec, directory: Path) -> ssl.SSLContext:
    """A mutual-TLS context presenting ``device``'s certificate (the ssl module loads key
    material from files only: written to a private directory removed by the caller)."""
    cert, key = directory / f"{device.device_id}.pem", directory / f"{device.device_id}.key"
    cert.write_bytes(device.cert_pem)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(device.key_pem)
    ctx = http.tls_context(str(cert), str(key))
    cert.unlink()
    key.unlink()
    return ctx


class _Template:
    """A steady sync's body with a fresh request id spliced in per request (no JSON encoding
    on the generator's hot path)."""

    MARK = "00000000-0000-4000-8000-00000000beef"

    def __init__(self, applied: str, rng: random.Random) -> None:
        self.applied = applied
        state = AgentState(AndroidFacts.generate(rng), applied_policy_version=applied)
        # A steady sync: nothing changed since the last report, only the applied policy version.
        message = protocol.sync(state, protocol.Report([], [], False, send_status=False,
                                                       send_local_settings=False))
        message["request_id"] = self.MARK
        self.head, self.tail = protocol.encode(message).split(self.MARK.encode())

    def body(self) -> bytes:
        return self.head + str(uuid.uuid4()).encode() + self.tail


async def _untimed(conn: http.PinnedConnection, body: bytes) -> dict[str, Any]:
    """One sync outside the measurement, waiting out ``sync_too_frequent`` refusals."""
    for _ in range(20):
        response = await conn.request("POST", protocol.SYNC, body, headers={"Content-Type": protocol.JSON})
        if response.status != 429:
            break
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
    if response.status != 200:
        raise protocol.error_of(response.status, response.body, response.headers)
    answer = json.loads(response.body)
    return answer if isinstance(answer, dict) else {}


async def _first_sync(conn: http.PinnedConnection, rng: random.Random) -> _Template:
    """The untimed first sync: a full report with the inventory; the answer's policy version (if
    any) is what the steady syncs report as applied."""
    state = AgentState(AndroidFacts.generate(rng))
    answer = await _untimed(conn, protocol.encode(protocol.sync(state, protocol.Report([], [], True))))
    policy = answer.get("policy")
    applied = str(policy.get("version", "")) if isinstance(policy, dict) else ""
    return _Template(applied, rng)


async def _device(spec: WorkerSpec, ctx: ssl.SSLContext, offset: float, out: WorkerResult,
                  phase: _Phase, rng: random.Random) -> None:
    conn = http.PinnedConnection(spec.host, spec.port, spec.pins, ctx, timeout=spec.timeout, retries=0)
    try:
        async with phase.gate:
            template = await _first_sync(conn, rng)
        if template.applied:
            # The report that the policy was applied, which the server records once: untimed
            # too, so that what is measured is the steady sync (nothing to write).
            await asyncio.sleep(spec.gap)
            async with phase.gate:
                await _untimed(conn, template.body())
    except (http.KesTransportError, protocol.KesError) as exc:
        out.setup_errors[getattr(exc, "code", "") or type(exc).__name__] += 1
        await conn.close()
        return
    finally:
        phase.set_up()
    if spec.mode == "handshake":
        await conn.close()
    conn.handshakes = 0
    await phase.go.wait()
    loop = asyncio.get_running_loop()
    end = phase.start + spec.duration
    slot = phase.start + offset
    headers = {"Content-Type": protocol.JSON}
    keep_alive = spec.mode == "reuse"
    earliest = 0.0  # an agent waits at least ``gap`` after an answer before its next sync
    while True:
        now = loop.time()
        if now >= end:
            break
        if earliest > slot:  # the answer came too late for these slots: missed
            skipped = math.ceil((earliest - slot) / spec.period)
            out.missed += skipped
            slot += skipped * spec.period
        if now - slot >= spec.period:  # still waiting for an answer when these slots came: missed
            missed = int((now - slot) / spec.period)
            out.missed += missed
            slot += missed * spec.period
        if slot >= end:
            break
        if slot > now:
            await asyncio.sleep(slot - now)
        t0 = time.perf_counter()  # uvloop's loop.time() has a millisecond resolution
        try:
            response = await conn.request("POST", protocol.SYNC, template.body(), headers=headers,
                                          keep_alive=keep_alive)
        except http.KesTransportError as exc:
            out.errors[type(exc).__name__] += 1
        else:
            if response.status == 200:
                out.latencies.append(time.perf_counter() - t0)
            else:
                out.errors[str(response.status)] += 1
        earliest = loop.time() + spec.gap
        slot += spec.period
    out.handshakes += conn.handshakes
    await conn.close()


class _Phase:
    """The devices' common clock: set up (bounded concurrency), then all start together."""

    def __init__(self, devices: int) -> None:
        self.gate = asyncio.Semaphore(64)
        self.remaining = devices
        self.all_set_up = asyncio.Event()
        self.go = asyncio.Event()
        self.start = 0.0
        if devices == 0:
            self.all_set_up.set()

    def set_up(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.all_set_up.set()


def run_worker(spec: WorkerSpec, ready: Any, go: Any, start_at: Any, results: Any) -> None:
    """The process entry point: set every device up, put ``True`` on ``ready`` (a queue), wait
    for ``go`` (an event), run from ``start_at`` (a shared ``time.time()`` value) for the
    duration and put the ``WorkerResult`` on ``results``."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        result = asyncio.run(_worker(spec, ready, go, start_at))
    except Exception as exc:  # reported to the parent, which would otherwise wait forever
        ready.put(False)
        result = WorkerResult()
        result.setup_errors[f"{type(exc).__name__}: {exc}"] += 1
    results.put(result)


async def _worker(spec: WorkerSpec, ready: Any, go: Any, start_at: Any) -> WorkerResult:
    out = WorkerResult()
    rng = random.Random(os.getpid())  # noqa: S311 - simulation data
    with tempfile.TemporaryDirectory(prefix="mdm-bench-kes-") as tmp:
        os.chmod(tmp, 0o700)
        contexts = [context_for(d, Path(tmp)) for d in spec.devices]
    phase = _Phase(len(contexts))
    count = max(1, len(contexts))
    tasks = [asyncio.ensure_future(_device(spec, ctx, spec.period * i / count, out, phase, rng))
             for i, ctx in enumerate(contexts)]
    await phase.all_set_up.wait()
    ready.put(True)
    await asyncio.to_thread(go.wait)
    loop = asyncio.get_running_loop()
    phase.start = loop.time() + (start_at.value - time.time())
    cpu0 = time.process_time()
    phase.go.set()
    await asyncio.gather(*tasks)
    out.cpu_seconds = time.process_time() - cpu0
    return out
