"""A contract fake of the core server's generic HTTPS JSON endpoint (``docs/reporting.md``), for
tests, the catch-up benchmark and the kill test, in this process or as a separate one.

It verifies what a real receiver verifies and refuses otherwise: mutual TLS with a client
certificate from the given CA (the TLS handshake fails without one), ``Content-Type:
application/json``, the ``X-MDM-Timestamp`` (at most 5 minutes of skew) and the
``X-MDM-Signature`` HMAC-SHA256 over ``timestamp + "." + body`` (compared in constant time), the
batch's shape. It de-duplicates by event uuid and records every new event in memory (not when run
as a process: memory stays bounded by the uuids seen) and, optionally, as one JSON line per event
in an append-only file (for checks across processes).

Faults, set by the constructor's fields, the methods, or the control endpoint of a fake run as a
process: ``down`` (not listening), ``delay`` (seconds before answering), ``fail`` (the next n
requests answer a status, with Retry-After), ``refuse`` (partial refusal of given uuids),
``garbage`` (the next n answer HTML), ``close`` (the next n close the connection mid-response).

    python -m mdm.devfakes.core_receiver --port P --cert server.pem --key server.key \\
        --client-ca ca.pem --hmac-key-file hmac.key --record events.jsonl --control-port C
    curl -d '{"action": "fail", "n": 3, "status": 503, "retry_after": 2}' http://127.0.0.1:C/control
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiohttp import web

MAX_SKEW_SECONDS = 300
MAX_BODY_BYTES = 64 * 1024 * 1024
_RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
_REQUIRED = {"uuid": str, "type": str, "severity": str, "created_at": str}
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass
class _Failure:
    status: int
    remaining: int
    retry_after: str | None


@dataclass
class CoreReceiver:
    """Start with ``start()`` (answers the URL to POST to); ``events`` holds what was accepted."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None  # None: no client certificate asked (never in production)
    hmac_key: bytes | None = None  # None: no signature checked
    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/events"
    record_file: Path | None = None
    # Keep accepted events in ``events`` (off for a long run: the record file holds them).
    keep_events: bool = True
    max_skew: float = MAX_SKEW_SECONDS
    # Faults.
    delay: float = 0.0
    refuse: set[str] = field(default_factory=set)
    # Records.
    events: list[dict[str, Any]] = field(default_factory=list)
    accepted: int = 0  # new events, kept or not
    duplicates: int = 0
    requests: int = 0
    answers: Counter[int] = field(default_factory=Counter)
    refusals: list[str] = field(default_factory=list)  # why requests were refused (401/400/415)

    def __post_init__(self) -> None:
        self._seen: set[str] = set()
        self._failures: list[_Failure] = []
        self._garbage = 0
        self._close = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._record: IO[str] | None = None
        self.url = ""

    # -- controls ----------------------------------------------------------------------------

    def fail(self, n: int, status: int = 500, retry_after: str | None = None) -> None:
        self._failures.append(_Failure(status, n, retry_after))

    def garbage(self, n: int = 1) -> None:
        self._garbage += n

    def close_connections(self, n: int = 1) -> None:
        self._close += n

    def clear_faults(self) -> None:
        self._failures.clear()
        self._garbage = self._close = 0
        self.delay = 0.0
        self.refuse.clear()

    @property
    def uuids(self) -> list[str]:
        return [e["uuid"] for e in self.events]

    # -- life cycle ---------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.client_ca_file)
        return context

    async def start(self) -> str:
        if self.record_file is not None and self._record is None:
            self._record = self.record_file.open("a", encoding="utf-8")
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(self.path, self._receive)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self.go_up()
        return self.url

    async def go_up(self) -> None:
        """Listen (again, on the same port after ``go_down``)."""
        assert self._runner is not None, "start() first"
        self._site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context(),
                                 reuse_address=True)
        await self._site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]
        self.url = f"https://{self.host}:{self.port}{self.path}"

    async def go_down(self) -> None:
        """Stop listening and drop the open connections: clients get ``connection refused``."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            for handler in list(self._runner.server.connections):
                handler.force_close()
                if handler.transport is not None:
                    handler.transport.abort()

    async def stop(self) -> None:
        await self.go_down()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._record is not None:
            self._record.close()
            self._record = None

    # -- the endpoint -------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        injected = self._injected(request)
        if injected is not None:
            return injected
        media = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return self._refuse(415, "the body must be application/json")
        body = await request.read()
        problem = self._check_signature(request, body)
        if problem:
            return self._refuse(401, problem)
        try:
            batch = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return self._refuse(400, "the body is not JSON")
        events, problem = _check_batch(batch)
        if problem:
            return self._refuse(400, problem)
        return self._answer(self._accept(events))

    def _injected(self, request: web.Request) -> web.StreamResponse | None:
        for failure in self._failures:
            if failure.remaining > 0:
                failure.remaining -= 1
                headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
                return self._answer({"error": f"injected {failure.status}"}, failure.status, headers)
        self._failures = [f for f in self._failures if f.remaining > 0]
        if self._garbage > 0:
            self._garbage -= 1
            self.answers[200] += 1
            return web.Response(status=200, text="<html><body>502 Bad Gateway</body></html>",
                                content_type="text/html")
        if self._close > 0 and request.transport is not None:
            self._close -= 1
            self.answers[0] += 1
            transport = request.transport
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 400\r\n\r\n{\"accep")
            transport.close()
            raise asyncio.CancelledError  # nothing more is written on this connection
        return None

    def _check_signature(self, request: web.Request, body: bytes) -> str:
        if self.hmac_key is None:
            return ""
        stamp = request.headers.get("X-MDM-Timestamp", "")
        given = request.headers.get("X-MDM-Signature", "")
        if not stamp.isdigit():
            return "missing or malformed X-MDM-Timestamp"
        if abs(time.time() - int(stamp)) > self.max_skew:
            return "X-MDM-Timestamp is more than 5 minutes away"
        if not given.startswith("v1="):
            return "missing or malformed X-MDM-Signature"
        expected = hmac.new(self.hmac_key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given[3:].encode()):
            return "bad signature"
        return ""

    def _accept(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        rejected: list[dict[str, str]] = []
        fresh: list[dict[str, Any]] = []
        for event in events:
            uuid = event["uuid"]
            if uuid in self.refuse:
                rejected.append({"uuid": uuid, "reason": "refused by the receiver (injected)"})
            elif uuid in self._seen:
                self.duplicates += 1
            else:
                self._seen.add(uuid)
                fresh.append(event)
        self.accepted += len(fresh)
        if self.keep_events:
            self.events.extend(fresh)
        if self._record is not None and fresh:
            self._record.write("\n".join(map(_ENCODE, fresh)) + "\n")
            self._record.flush()
        answer: dict[str, Any] = {"accepted": len(events) - len(rejected)}
        if rejected:
            answer["rejected"] = rejected
        return answer

    def _refuse(self, status: int, message: str) -> web.Response:
        self.refusals.append(message)
        return self._answer({"error": message}, status)

    def _answer(self, body: dict[str, Any], status: int = 200,
                headers: dict[str, str] | None = None) -> web.Response:
        self.answers[status] += 1
        return web.json_response(body, status=status, headers=headers)

    def stats(self) -> dict[str, Any]:
        return {"events": self.accepted, "duplicates": self.duplicates, "requests": self.requests,
                "answers": {str(k): v for k, v in self.answers.items()}, "refusals": self.refusals[-20:]}


def _check_batch(batch: Any) -> tuple[list[dict[str, Any]], str]:
    events = batch.get("events") if isinstance(batch, dict) else None
    if not isinstance(events, list) or not events:
        return [], "events must be a non-empty list"
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            return [], f"events[{index}] is not an object"
        for name, kind in _REQUIRED.items():
            if not isinstance(event.get(name), kind) or not event[name]:
                return [], f"events[{index}].{name} is missing or not a {kind.__name__}"
        if not _RFC3339_UTC.match(event["created_at"]):
            return [], f"events[{index}].created_at is not RFC 3339 UTC"
        if not isinstance(event.get("body"), dict):
            return [], f"events[{index}].body is not an object"
    return events, ""


# -- control endpoint and CLI --------------------------------------------------------------------


async def _apply(fake: CoreReceiver, body: dict[str, Any]) -> None:
    action = body.get("action")
    n = int(body.get("n", 1))
    if action == "fail":
        retry = body.get("retry_after")
        fake.fail(n, int(body.get("status", 500)), None if retry is None else str(retry))
    elif action == "garbage":
        fake.garbage(n)
    elif action == "close":
        fake.close_connections(n)
    elif action == "delay":
        fake.delay = float(body.get("seconds", 0))
    elif action == "refuse":
        uuids = body.get("uuids")
        if not isinstance(uuids, list) or not all(isinstance(u, str) for u in uuids):
            raise ValueError("refuse needs uuids: a list of strings")
        fake.refuse.update(uuids)
    elif action == "down":
        await fake.go_down()
    elif action == "up":
        await fake.go_up()
    elif action == "clear":
        fake.clear_faults()
    else:
        raise ValueError(f"unknown action {action!r}")


async def start_control(fake: CoreReceiver, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    async def control(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("a JSON object is expected")
            await _apply(fake, body)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(fake.stats())

    app = web.Application()
    app.router.add_post("/control", control)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def read_record(path: Path) -> list[dict[str, Any]]:
    """The events a receiver recorded in ``path`` (a torn last line, from a kill, is skipped)."""
    found: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    return found


async def _serve(args: argparse.Namespace, key: bytes | None) -> None:
    fake = CoreReceiver(args.cert, args.key, args.client_ca, key, host=args.host, port=args.port,
                        record_file=Path(args.record) if args.record else None, keep_events=False)
    await serve_forever(fake, args.control_port, args.host)


async def serve_forever(
    fake: CoreReceiver, control_port: int, host: str, label: str = "core receiver"
) -> None:
    """Start ``fake`` (and its control endpoint on ``control_port``, if any), print its URL and
    serve until cancelled (the process's entry points)."""
    url = await fake.start()
    control = await start_control(fake, control_port, host) if control_port else None
    print(f"{label}: {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        if control is not None:
            await control.cleanup()
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mdm.devfakes.core_receiver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="server certificate (PEM, chain)")
    parser.add_argument("--key", required=True, help="server key (PEM)")
    parser.add_argument("--client-ca", default=None, help="CA that client certificates must chain to")
    parser.add_argument("--hmac-key-file", default=None, help="the shared HMAC key")
    parser.add_argument("--record", default=None, help="append every new event to this JSON-lines file")
    parser.add_argument("--control-port", type=int, default=0, help="plain-HTTP control endpoint")
    args = parser.parse_args(argv)
    key = Path(args.hmac_key_file).read_bytes().strip() if args.hmac_key_file else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, key))


if __name__ == "__main__":
    main()
