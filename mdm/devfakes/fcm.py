"""A contract fake of Google's FCM HTTP v1 service, for tests, benchmarks and manual runs.

Two endpoints, speaking the documented wire protocol and errors:

- ``POST /token``: the OAuth2 JWT bearer grant (RFC 7523). The assertion's RS256 signature is
  checked against the registered service account's public key, and its iss, aud, scope, iat and
  exp; the answer is ``{"access_token", "expires_in", "token_type"}`` or Google's
  ``{"error": "invalid_grant", ...}``. It can be told to be down (503), to refuse (401
  invalid_client, 400 invalid_grant) or to answer garbage.
- ``POST /v1/projects/{project}/messages:send``: checks the bearer token it issued (and its
  expiry), the project, and the body (a data-only message to a token); answers
  ``{"name": "projects/p/messages/…"}`` or the documented error bodies (``error.code``,
  ``message``, ``status`` and a ``google.firebase.fcm.v1.FcmError`` detail), with Retry-After
  where Google sends one.

Accepted messages are recorded and handed to ``on_message(token, data)`` (e.g. a device
simulator's wake-up). ``python -m mdm.devfakes.fcm --service-account FILE`` runs one.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import itertools
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from mdm.push.fcm.oauth import GOOGLE_TOKEN_URI, GRANT_TYPE, SCOPE, ServiceAccount, ServiceAccountError

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
# errorCode -> (HTTP status, canonical status, message), after Google's FCM v1 error table.
ERRORS: dict[str, tuple[int, str, str]] = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for the message rate."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}
OAuthMode = Literal["ok", "down", "unauthorized", "invalid_grant", "garbage"]
OnMessage = Callable[[str, dict[str, str]], Awaitable[None] | None]
_TTL_RE = re.compile(r"^\d+(\.\d{1,9})?s$")
_REG_TOKEN_RE = re.compile(r"^[A-Za-z0-9_:\-.]{1,4096}$")


@dataclass(frozen=True)
class FakeUrls:
    base_url: str  # FcmConfig.base_url
    token_url: str  # FcmConfig.token_url (and the service account's token_uri)


@dataclass(frozen=True)
class Accepted:
    token: str
    data: dict[str, str]
    android: dict[str, Any]
    name: str


@dataclass
class _Failure:
    code: str
    remaining: int
    retry_after: str | None


@dataclass
class _Account:
    project_id: str
    public_key: RSAPublicKey


@dataclass
class FcmFake:
    """Register accounts with ``add_account``; ``start`` answers the URLs to configure."""

    token_ttl: int = 3600
    ssl_context: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    port: int = 0
    on_message: OnMessage | None = None
    # Controls.
    oauth_mode: OAuthMode = "ok"
    unregistered: set[str] = field(default_factory=set)
    mismatched: set[str] = field(default_factory=set)
    third_party_auth: set[str] = field(default_factory=set)
    # Records.
    accepted: list[Accepted] = field(default_factory=list)
    token_requests: int = 0
    send_requests: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (status, reason)

    def __post_init__(self) -> None:
        self._accounts: dict[str, _Account] = {}
        self._issued: dict[str, tuple[str, float]] = {}  # access token -> (client_email, expiry)
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.urls: FakeUrls | None = None

    # -- set-up and controls -------------------------------------------------------------------

    def add_account(self, client_email: str, project_id: str, public_key: RSAPublicKey) -> None:
        self._accounts[client_email] = _Account(project_id, public_key)

    def add_service_account(self, account: ServiceAccount) -> None:
        self.add_account(account.client_email, account.project_id, account.key.public_key())

    def unregister(self, token: str) -> None:
        self.unregistered.add(token)

    def sender_mismatch(self, token: str) -> None:
        self.mismatched.add(token)

    def fail_next(self, n: int, code: str = "UNAVAILABLE", retry_after: str | None = None) -> None:
        """The next ``n`` sends answer ``code`` (UNAVAILABLE, INTERNAL, QUOTA_EXCEEDED, ...)."""
        if code not in ERRORS:
            raise ValueError(f"unknown FCM error code {code!r}")
        self._failures.append(_Failure(code, n, retry_after))

    def quota_exceeded(self, n: int, retry_after: str | None = "30") -> None:
        self.fail_next(n, "QUOTA_EXCEEDED", retry_after)

    def expire_access_tokens(self) -> None:
        self._issued = {t: (email, 0.0) for t, (email, _) in self._issued.items()}

    # -- life cycle ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        return app

    async def start(self) -> FakeUrls:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        scheme = "https" if self.ssl_context else "http"
        base = f"{scheme}://{host}:{port}"
        self.urls = FakeUrls(base, f"{base}/token")
        return self.urls

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the token endpoint -------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if self.oauth_mode == "down":
            return web.Response(status=503, text="Service Unavailable")
        if self.oauth_mode == "garbage":
            return web.Response(status=200, text="<html>not json</html>", content_type="text/html")
        if self.oauth_mode == "unauthorized":
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if self.oauth_mode == "invalid_grant":
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        form = await request.post()
        if form.get("grant_type") != GRANT_TYPE:
            return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type.")
        assertion = form.get("assertion")
        if not isinstance(assertion, str):
            return _oauth_error(400, "invalid_request", "Missing required parameter: assertion")
        email, problem = self._check_assertion(assertion)
        if problem:
            return _oauth_error(400, "invalid_grant", problem)
        self._purge()
        access = "ya29.fake-" + secrets.token_urlsafe(24)
        self._issued[access] = (email, time.monotonic() + self.token_ttl)
        return web.json_response({"access_token": access, "expires_in": self.token_ttl,
                                  "token_type": "Bearer"})

    def _check_assertion(self, assertion: str) -> tuple[str, str]:
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return "", "Invalid JWT: not a JWT."
        email = unverified.get("iss")
        if not isinstance(email, str):
            return "", "Invalid grant: account not found"
        account = self._accounts.get(email)
        if account is None or header.get("alg") != "RS256":
            return "", "Invalid grant: account not found"
        audiences = [GOOGLE_TOKEN_URI] + ([self.urls.token_url] if self.urls else [])
        try:
            claims = jwt.decode(assertion, account.public_key, algorithms=["RS256"],
                                audience=audiences, issuer=email,
                                options={"require": ["iss", "aud", "iat", "exp", "scope"]})
        except jwt.InvalidSignatureError:
            return "", "Invalid JWT Signature."
        except jwt.ExpiredSignatureError:
            return "", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a " \
                       "reasonable timeframe. Check your iat and exp values in the JWT claim."
        except jwt.PyJWTError as exc:
            return "", f"Invalid JWT: {type(exc).__name__}"
        if claims["exp"] - claims["iat"] > 3600:
            return "", "Invalid JWT: Token must be a short-lived token (60 minutes)"
        if SCOPE not in str(claims["scope"]).split():
            return "", "Invalid OAuth scope or ID token audience provided."
        return email, ""

    def _purge(self) -> None:
        now = time.monotonic()
        if len(self._issued) > 1000:
            self._issued = {t: v for t, v in self._issued.items() if v[1] > now}

    # -- messages:send ------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.Response:
        self.send_requests += 1
        auth = request.headers.get("Authorization", "")
        issued = self._issued.get(auth[7:]) if auth.startswith("Bearer ") else None
        if issued is None or issued[1] <= time.monotonic():
            return self._error(401, "UNAUTHENTICATED",
                               "Request had invalid authentication credentials. Expected OAuth 2 "
                               "access token, login cookie or other valid authentication credential.")
        account = self._accounts[issued[0]]
        if request.match_info["project"] != account.project_id:
            return self._error(403, "PERMISSION_DENIED",
                               "Permission 'cloudmessaging.messages.create' denied on resource.")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return self._error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        token, data, android, problem = _check_message(body)
        if problem:
            return self._fcm_error("INVALID_ARGUMENT", message=problem)
        for failure in self._failures:
            if failure.remaining > 0:
                failure.remaining -= 1
                return self._fcm_error(failure.code, retry_after=failure.retry_after)
        self._failures = [f for f in self._failures if f.remaining > 0]
        if token in self.unregistered:
            return self._fcm_error("UNREGISTERED")
        if token in self.mismatched:
            return self._fcm_error("SENDER_ID_MISMATCH")
        if token in self.third_party_auth:
            return self._fcm_error("THIRD_PARTY_AUTH_ERROR")
        name = f"projects/{account.project_id}/messages/0:{int(time.time() * 1000)}%{next(self._ids):08x}"
        self.accepted.append(Accepted(token, data, android, name))
        if self.on_message is not None:
            outcome = self.on_message(token, data)
            if inspect.isawaitable(outcome):
                await outcome
        return web.json_response({"name": name})

    def _error(self, status: int, gstatus: str, message: str,
               details: list[dict[str, Any]] | None = None,
               retry_after: str | None = None) -> web.Response:
        self.rejected.append((status, gstatus))
        error: dict[str, Any] = {"code": status, "message": message, "status": gstatus}
        if details is not None:
            error["details"] = details
        headers = {"Retry-After": retry_after} if retry_after else None
        return web.json_response({"error": error}, status=status, headers=headers)

    def _fcm_error(self, code: str, *, message: str | None = None,
                   retry_after: str | None = None) -> web.Response:
        status, gstatus, default = ERRORS[code]
        response = self._error(status, gstatus, message or default,
                               [{"@type": FCM_ERROR_TYPE, "errorCode": code}], retry_after)
        self.rejected[-1] = (status, code)
        return response


def _check_message(body: Any) -> tuple[str, dict[str, str], dict[str, Any], str]:
    """(token, data, android, "") or a problem in Google's words."""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        return "", {}, {}, "Invalid JSON payload received. Unknown name: message is required."
    token = message.get("token")
    if not isinstance(token, str) or not token:
        return "", {}, {}, "Recipient of the message is not set."
    if not _REG_TOKEN_RE.fullmatch(token):
        return "", {}, {}, "The registration token is not a valid FCM registration token"
    if "notification" in message or "notification" in (message.get("android") or {}):
        return "", {}, {}, "A wake-up is data-only: no notification."
    data = message.get("data")
    if not isinstance(data, dict) or not data or \
            not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return "", {}, {}, "Invalid value at 'message.data' (TYPE_STRING)"
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "", {}, {}, "Invalid value at 'message.android'"
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        return "", {}, {}, "Invalid value at 'message.android.priority'"
    ttl = android.get("ttl", "0s")
    if not isinstance(ttl, str) or not _TTL_RE.fullmatch(ttl) or float(ttl[:-1]) > 28 * 24 * 3600:
        return "", {}, {}, "Invalid value at 'message.android.ttl' (google.protobuf.Duration)"
    return token, data, android, ""


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


async def _serve(args: argparse.Namespace, account: ServiceAccount) -> None:
    fake = FcmFake(port=args.port, host=args.host)
    fake.add_service_account(account)
    urls = await fake.start()
    print(f"FCM fake: base_url = {urls.base_url}  token_url = {urls.token_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mdm.devfakes.fcm", description=__doc__)
    parser.add_argument("--service-account", required=True, help="the service-account JSON")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    try:
        account = ServiceAccount.load(args.service_account)
    except ServiceAccountError as exc:
        raise SystemExit(f"error: {exc}") from None
    try:
        asyncio.run(_serve(args, account))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
