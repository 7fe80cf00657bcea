"""The FCM HTTP v1 sender: one data-only wake-up per ``send``, the answer classified into an
``Outcome`` (Google's FCM v1 error table: ``error.status`` and the ``errorCode`` of the
``google.firebase.fcm.v1.FcmError`` detail).

One long-lived ``httpx.AsyncClient`` (HTTP/2 where the server offers it, the [push] proxy through
HTTP CONNECT) carries both the token requests and the sends. Never raises for a server answer or
a network failure; never logs the key, an access token or the proxy password.
"""

from __future__ import annotations

import logging
import re
import ssl
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from mdm.push.circuit import Circuit
from mdm.push.config import FcmConfig
from mdm.push.fcm.limits import DeviceLimiter, ProjectLimiter
from mdm.push.fcm.oauth import AccessTokens, ServiceAccount, TokenError, parse_retry_after
from mdm.push.stats import TransportStats
from mdm.push.types import Outcome, ProxySettings, PushResult, WakeTarget

log = logging.getLogger("mdm.push.fcm")

FCM_API = "https://fcm.googleapis.com"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
MAX_TTL_SECONDS = 28 * 24 * 3600
# Registration tokens are opaque URL-safe text (about 150-250 characters today).
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_:\-.]{1,4096}$")

# The FcmError codes and what becomes of the push.
ERROR_OUTCOMES: dict[str, Outcome] = {
    "UNREGISTERED": Outcome.INVALID_TOKEN,
    "SENDER_ID_MISMATCH": Outcome.INVALID_TOKEN,
    "QUOTA_EXCEEDED": Outcome.RETRY,
    "UNAVAILABLE": Outcome.RETRY,
    "INTERNAL": Outcome.RETRY,
    "INVALID_ARGUMENT": Outcome.REJECTED,
    "THIRD_PARTY_AUTH_ERROR": Outcome.CREDENTIALS,
}


FcmStats = TransportStats  # nothing FCM-specific to count


def proxy_url(proxy: ProxySettings | None) -> str | None:
    """The proxy as httpx takes it (Basic login in the URL). A secret: never log it."""
    if proxy is None or not proxy.host:
        return None
    auth = ""
    if proxy.login:
        auth = f"{quote(proxy.login, safe='')}:{quote(proxy.password, safe='')}@"
    host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
    return f"http://{auth}{host}:{proxy.port}"


def _verify(config: FcmConfig) -> ssl.SSLContext | bool:
    if config.ca_file:
        return ssl.create_default_context(cafile=config.ca_file)
    return True


class FcmClient:
    """A ``PushTransport`` for FCM (``mdm.push.types``)."""

    def __init__(self, config: FcmConfig, service_account: ServiceAccount, *,
                 proxy: ProxySettings | None = None) -> None:
        self._config = config
        self.account = service_account
        self._http = httpx.AsyncClient(
            http2=True, verify=_verify(config), proxy=proxy_url(proxy), trust_env=False,
            timeout=httpx.Timeout(config.timeout_seconds), follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self.tokens = AccessTokens(service_account, self._http, token_url=config.token_url)
        base = (config.base_url or FCM_API).rstrip("/")
        self._url = f"{base}/v1/projects/{quote(service_account.project_id, safe='')}/messages:send"
        self.project_limiter = ProjectLimiter(config.project_per_minute)
        self.device_limiter = DeviceLimiter(config.device_per_minute)
        self.stats = FcmStats()
        self._circuit = Circuit("FCM")
        self._closed = False

    def __repr__(self) -> str:
        return f"FcmClient(project={self.account.project_id!r}, url={self._url!r})"

    async def close(self) -> None:
        self._closed = True
        await self._http.aclose()

    # -- circuit breaker and credentials

    @property
    def circuit_open(self) -> bool:
        return self._circuit.is_open

    @property
    def circuit_reason(self) -> str:
        return self._circuit.reason

    def reset_circuit(self) -> None:
        self._circuit.reset()

    def replace_account(self, account: ServiceAccount) -> None:
        """A new key for the same Firebase project, taken while running: the cached access token
        is dropped and the circuit closed. Another project would orphan every device's token."""
        if account.project_id != self.account.project_id:
            raise ValueError(f"the new service account is for project {account.project_id!r}, not "
                             f"{self.account.project_id!r}: every Android device would have to "
                             "re-register")
        self.account = account
        self.tokens = AccessTokens(account, self._http, token_url=self._config.token_url)
        self.reset_circuit()

    # -- sending

    async def send(self, target: WakeTarget, *, expires: datetime | None = None) -> PushResult:
        result = await self._send(target, expires)
        self.stats.record(result)
        if result.outcome is Outcome.CREDENTIALS:
            self._circuit.open(result.reason, f"FCM refused our credentials ({result.reason}, project "
                               f"{self.account.project_id}): no push is sent until the service "
                               "account is replaced")
        elif result.outcome is not Outcome.SENT:
            log.debug("FCM push to device %d not sent: %s (%s)", target.device_id,
                      result.outcome.value, result.reason)
        return result

    def message(self, token: str, expires: datetime | None = None) -> dict[str, Any]:
        """The data-only wake-up: high priority so that a dozing device wakes, collapsed so that
        an offline device gets one wake-up, not a backlog."""
        ttl = self._config.ttl_seconds
        if expires is not None:
            ttl = int((expires - datetime.now(UTC)).total_seconds())
        ttl = max(0, min(ttl, MAX_TTL_SECONDS))
        android: dict[str, Any] = {"priority": "HIGH", "ttl": f"{ttl}s"}
        if self._config.collapse_key:
            android["collapse_key"] = self._config.collapse_key
        return {"message": {"token": token, "data": {"mdm": "wake"}, "android": android}}

    async def _send(self, target: WakeTarget, expires: datetime | None) -> PushResult:
        if not _TOKEN_RE.fullmatch(target.token):
            return PushResult(Outcome.INVALID_TOKEN, "malformed registration token")
        if self._closed:
            return PushResult(Outcome.UNAVAILABLE, "FCM client closed")
        refused = self._circuit.refusal()
        if refused is not None:
            return refused
        wait = self.device_limiter.check(target.token)
        if wait is not None:
            return PushResult(Outcome.RETRY, "device_rate_limited", retry_after=wait)
        await self.project_limiter.acquire()
        body = self.message(target.token, expires)
        for attempt in range(2):
            tokens = self.tokens
            try:
                access = await tokens.get()
            except TokenError as exc:
                return PushResult(exc.outcome, exc.reason, exc.status, exc.retry_after)
            try:
                resp = await self._http.post(self._url, json=body,
                                             headers={"Authorization": f"Bearer {access}"})
            except httpx.TimeoutException:
                return PushResult(Outcome.RETRY, "timeout")
            except httpx.HTTPError as exc:
                return PushResult(Outcome.RETRY, f"network error ({type(exc).__name__})")
            if resp.status_code == 200:
                return PushResult(Outcome.SENT, message_id=_message_name(resp))
            result = classify(resp.status_code, _json(resp), resp.headers.get("retry-after"))
            if resp.status_code == 401 and result.reason != "THIRD_PARTY_AUTH_ERROR" and attempt == 0:
                # Most likely our access token expired early or was revoked: refresh it once.
                tokens.invalidate(access)
                continue
            return result
        raise AssertionError("unreachable")  # pragma: no cover


def _json(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _message_name(resp: httpx.Response) -> str | None:
    body = _json(resp)
    name = body.get("name") if body else None
    return name if isinstance(name, str) else None


def fcm_error_code(body: dict[str, Any] | None) -> tuple[str, str]:
    """(the FcmError errorCode or "", the canonical error.status or "") of an error body."""
    error = body.get("error") if body else None
    if not isinstance(error, dict):
        return "", ""
    status = error.get("status")
    code = ""
    details = error.get("details")
    if isinstance(details, list):
        for d in details:
            if isinstance(d, dict) and d.get("@type") == FCM_ERROR_TYPE:
                value = d.get("errorCode")
                if isinstance(value, str):
                    code = value
                    break
    return code, status if isinstance(status, str) else ""


def classify(status: int, body: dict[str, Any] | None, retry_after: str | None) -> PushResult:
    """An FCM error answer as a ``PushResult`` (the reason: the FcmError code, else the status)."""
    code, gstatus = fcm_error_code(body)
    after = parse_retry_after(retry_after)
    outcome = ERROR_OUTCOMES.get(code)
    if outcome is None:
        if status == 401:
            outcome = Outcome.CREDENTIALS  # UNAUTHENTICATED: our token refused
        elif status == 403:
            outcome = Outcome.CREDENTIALS  # PERMISSION_DENIED: the account may not send
        elif status == 429 or status >= 500:
            outcome = Outcome.RETRY
        elif 400 <= status < 500:
            outcome = Outcome.REJECTED  # a malformed request, a wrong project or URL
        else:
            outcome = Outcome.RETRY  # 1xx/3xx: not what FCM answers; a middlebox's doing
    reason = code or gstatus or f"HTTP {status}"
    return PushResult(outcome, reason, status,
                      after if outcome is Outcome.RETRY else None)
