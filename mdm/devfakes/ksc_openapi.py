"""A contract fake of the reference product's Open API, the part the ``ksc`` transport uses.

- ``POST /api/v1.0/login``: ``Authorization: KSCBasic user="<b64>", pass="<b64>",
  domain="<b64>", internal="0|1"``, every field strict base64 of UTF-8, checked against the
  registered account; answers 200 ``{"PxgRetVal": <session>}`` (the token calls then carry in
  ``X-KSC-Session``), or 401.
- ``POST /api/v1.0/EventNotificationsApi.PublishEvent``: needs a live ``X-KSC-Session`` (401
  otherwise), ``application/json``, exactly ``wstrEventType``, ``pEventBody`` (a params
  container, strictly typed, nothing null) and ``tmBirthTime`` (``YYYY-MM-DDTHH:MM:SSZ``); a
  violation answers HTTP 500 with ``{"PxgError": {"code", "module": "KLPAR", "message"}}``, the
  product's error shape. Published events are recorded (and de-duplicated by ``KLMDM_EVENT_ID``).

Controls: ``expire_sessions()`` (the next call meets 401 and must log in again), ``fail(n,
status, retry_after)``, ``refuse`` (event ids answered with a params error), ``reject_logins``.

    python -m mdm.devfakes.ksc_openapi --port P --cert server.pem --key server.key \\
        --user reporter --password-file pw.txt
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import re
import secrets
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from mdm.reporting.ksc_params import check_container

_KSCBASIC = re.compile(
    r'^KSCBasic user="(?P<user>[^"]*)", pass="(?P<pass>[^"]*)"'
    r'(?:, domain="(?P<domain>[^"]*)")?(?:, internal="(?P<internal>[01])")?$'
)
_BIRTH = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PARAMS_ERROR = 1186  # the code this fake gives a params violation (module KLPAR)


@dataclass(frozen=True)
class Published:
    event_type: str
    body: dict[str, Any]
    birth_time: str


@dataclass
class _Failure:
    status: int
    remaining: int
    retry_after: str | None
    after: int = 0  # calls let through first


@dataclass
class KscOpenApiFake:
    user: str
    password: str
    domain: str = ""
    internal: bool = False
    cert_file: str | None = None  # None: plain HTTP (tests of the parser only)
    key_file: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    reject_logins: bool = False
    refuse: set[str] = field(default_factory=set)
    # Records.
    published: list[Published] = field(default_factory=list)
    duplicates: int = 0
    logins: int = 0
    login_headers: list[str] = field(default_factory=list)  # as received (secrets: tests only)
    calls: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sessions: set[str] = set()
        self.sessions_issued: list[str] = []  # secrets: tests only
        self._seen: set[str] = set()
        self._failures: list[_Failure] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- controls ----------------------------------------------------------------------------

    def expire_sessions(self) -> None:
        self._sessions.clear()

    def fail(self, n: int, status: int = 503, retry_after: str | None = None, after: int = 0) -> None:
        """The next ``n`` PublishEvent calls (after ``after`` good ones) answer ``status``."""
        self._failures.append(_Failure(status, n, retry_after, after))

    @property
    def event_ids(self) -> list[str]:
        return [str(p.body.get("KLMDM_EVENT_ID")) for p in self.published]

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        context = None
        if self.cert_file and self.key_file:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert_file, self.key_file)
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/api/v1.0/login", self._login)
        app.router.add_post("/api/v1.0/EventNotificationsApi.PublishEvent", self._publish)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=context).start()
        self.port = self._runner.addresses[0][1]
        self.base_url = f"{'https' if context else 'http'}://{self.host}:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- endpoints ----------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        self.login_headers.append(header)
        match = _KSCBASIC.match(header)
        if match is None or self.reject_logins:
            return web.Response(status=401, text="Unauthorized")
        try:
            fields = {k: _strict_b64(v) for k, v in match.groupdict().items()
                      if k != "internal" and v is not None}
        except ValueError:
            return web.Response(status=401, text="Unauthorized")
        internal = match.group("internal") == "1"
        ok = (
            secrets.compare_digest(fields.get("user", "").encode(), self.user.encode())
            and secrets.compare_digest(fields.get("pass", "").encode(), self.password.encode())
            and fields.get("domain", "") == self.domain
            and internal == self.internal
        )
        if not ok:
            return web.Response(status=401, text="Unauthorized")
        self.logins += 1
        token = secrets.token_urlsafe(24)
        self._sessions.add(token)
        self.sessions_issued.append(token)
        # In the body only: a client's HTTP library may trace answer headers at DEBUG.
        return web.json_response({"PxgRetVal": token})

    async def _publish(self, request: web.Request) -> web.Response:
        self.calls += 1
        if request.headers.get("X-KSC-Session") not in self._sessions:
            return web.Response(status=401, text="Unauthorized")
        for failure in self._failures:
            if failure.after > 0:
                failure.after -= 1
                break
            if failure.remaining > 0:
                failure.remaining -= 1
                headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
                return web.Response(status=failure.status, text="Service Unavailable", headers=headers)
        self._failures = [f for f in self._failures if f.remaining > 0]
        media = request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
        if media != "application/json":
            return self._error("Content-Type must be application/json")
        try:
            call = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return self._error("the request body is not JSON")
        problem = _check_call(call)
        if problem:
            return self._error(problem)
        body = call["pEventBody"]
        event_id = body.get("KLMDM_EVENT_ID")
        if event_id in self.refuse:
            return self._error(f"event {event_id} refused (injected)")
        if event_id in self._seen:
            self.duplicates += 1
        else:
            if isinstance(event_id, str):
                self._seen.add(event_id)
            self.published.append(Published(call["wstrEventType"], body, call["tmBirthTime"]))
        return web.json_response({})

    def _error(self, message: str) -> web.Response:
        error = {"code": PARAMS_ERROR, "module": "KLPAR", "file": "params.cpp", "line": 1,
                 "message": message, "locdata": {"format-id": PARAMS_ERROR, "format": message,
                                                 "locmodule": "KLPAR", "args": []}}
        self.errors.append(error)
        return web.json_response({"PxgError": error}, status=500)


def _strict_b64(text: str) -> str:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError) as exc:
        raise ValueError("not base64 of UTF-8") from exc


def _check_call(call: Any) -> str:
    if not isinstance(call, dict):
        return "the arguments must be a JSON object"
    unknown = set(call) - {"wstrEventType", "pEventBody", "tmBirthTime"}
    if unknown:
        return f"unknown argument(s) {sorted(unknown)}"
    if not isinstance(call.get("wstrEventType"), str) or not call["wstrEventType"]:
        return "wstrEventType must be a non-empty string"
    if not isinstance(call.get("tmBirthTime"), str) or not _BIRTH.match(call["tmBirthTime"]):
        return "tmBirthTime must be a datetime YYYY-MM-DDTHH:MM:SSZ"
    return check_container(call.get("pEventBody"))


async def _serve(args: argparse.Namespace, password: str) -> None:
    fake = KscOpenApiFake(args.user, password, args.domain, args.internal, args.cert, args.key,
                          host=args.host, port=args.port)
    print(f"Open API fake: {await fake.start()}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mdm.devfakes.ksc_openapi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=13299)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--domain", default="")
    parser.add_argument("--internal", action="store_true")
    args = parser.parse_args(argv)
    password = Path(args.password_file).read_text().strip()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, password))


if __name__ == "__main__":
    main()
