"""The Firebase service account and the OAuth2 access token it buys (RFC 7523 JWT bearer grant).

The token is cached and refreshed ahead of expiry, one refresh at a time: concurrent senders wait
for the same refresh. Signing the JWT is done off the event loop. A failed refresh is remembered
for a short cool-down, so a dead token endpoint is not hammered by every waiting sender. Neither
the private key nor an access token is ever logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mdm.push.types import Outcome

log = logging.getLogger("mdm.push.fcm")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600
REQUIRED_FIELDS = ("project_id", "client_email", "private_key")


class ServiceAccountError(ValueError):
    """The service-account file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ServiceAccount:
    project_id: str
    client_email: str
    private_key_id: str
    token_uri: str
    key: RSAPrivateKey = field(repr=False)

    def __repr__(self) -> str:  # never the key
        return f"ServiceAccount(project_id={self.project_id!r}, client_email={self.client_email!r})"

    @classmethod
    def load(cls, path: str | Path) -> ServiceAccount:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ServiceAccountError(f"FCM service account file {p} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ServiceAccountError(f"FCM service account file {p} cannot be read: "
                                      f"{type(exc).__name__}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            # The position only: the text around it may be the key.
            raise ServiceAccountError(f"FCM service account file {p} is not JSON "
                                      f"(line {exc.lineno}, column {exc.colno})") from None
        return cls.from_mapping(data, source=str(p))

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "the service account") -> ServiceAccount:
        if not isinstance(data, dict):
            raise ServiceAccountError(f"{source} is not a JSON object")
        if data.get("type", "service_account") != "service_account":
            raise ServiceAccountError(f"{source} is a {data.get('type')!r} credential, "
                                      "not a service account key")
        missing = [k for k in REQUIRED_FIELDS if not isinstance(data.get(k), str) or not data[k]]
        if missing:
            raise ServiceAccountError(f"{source} lacks {', '.join(missing)}")
        try:
            key = load_pem_private_key(data["private_key"].encode(), password=None)
        except (ValueError, TypeError):
            raise ServiceAccountError(f"{source}: private_key is not an unencrypted PEM "
                                      "private key") from None
        if not isinstance(key, RSAPrivateKey):
            raise ServiceAccountError(f"{source}: private_key is not an RSA key (RS256 needs one)")
        token_uri = data.get("token_uri") or GOOGLE_TOKEN_URI
        if not isinstance(token_uri, str) or not token_uri.startswith(("https://", "http://")):
            raise ServiceAccountError(f"{source}: token_uri is not an http(s) URL")
        return cls(project_id=data["project_id"], client_email=data["client_email"],
                   private_key_id=str(data.get("private_key_id") or ""), token_uri=token_uri,
                   key=key)

    def assertion(self, audience: str, now: float | None = None) -> str:
        """The signed JWT of the bearer grant (RS256; CPU work: call it off the event loop)."""
        iat = int(time.time() if now is None else now)
        claims = {"iss": self.client_email, "scope": SCOPE, "aud": audience,
                  "iat": iat, "exp": iat + ASSERTION_LIFETIME}
        headers = {"kid": self.private_key_id} if self.private_key_id else None
        return jwt.encode(claims, self.key, algorithm="RS256", headers=headers)


class TokenError(Exception):
    """No access token: ``outcome`` is RETRY (endpoint down, 5xx, garbage) or CREDENTIALS (the
    grant refused: 400 invalid_grant, 401)."""

    def __init__(self, outcome: Outcome, reason: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass
class _Token:
    value: str = field(repr=False)
    expires_at: float  # time.monotonic()


class AccessTokens:
    """The cached OAuth2 access token of one service account."""

    def __init__(self, account: ServiceAccount, http: httpx.AsyncClient, *, token_url: str = "",
                 refresh_ahead: float = 300.0, failure_cooldown: float = 2.0) -> None:
        self._account = account
        self._http = http
        self._url = token_url or account.token_uri
        self._refresh_ahead = refresh_ahead
        self._cooldown = failure_cooldown
        self._lock = asyncio.Lock()
        self._token: _Token | None = None
        self._failure: tuple[float, TokenError] | None = None
        self.fetches = 0  # token requests made (tests, status)

    def _fresh(self) -> str | None:
        t = self._token
        if t is not None and time.monotonic() < t.expires_at - self._refresh_ahead:
            return t.value
        return None

    async def get(self) -> str:
        """A valid access token; raises ``TokenError``. At most one refresh runs at a time."""
        value = self._fresh()
        if value is not None:
            return value
        async with self._lock:
            value = self._fresh()
            if value is not None:
                return value
            if self._failure is not None and time.monotonic() < self._failure[0]:
                raise self._failure[1]
            try:
                self._token = await self._fetch()
            except TokenError as exc:
                self._failure = (time.monotonic() + self._cooldown, exc)
                log.warning("FCM access token refresh failed: %s", exc.reason)
                raise
            self._failure = None
            return self._token.value

    def invalidate(self, value: str) -> None:
        """Forget ``value`` (a 401 said it is no longer good) so the next ``get`` refreshes."""
        if self._token is not None and self._token.value == value:
            self._token = None

    async def _fetch(self) -> _Token:
        self.fetches += 1
        assertion = await asyncio.to_thread(self._account.assertion, self._account.token_uri)
        try:
            resp = await self._http.post(self._url, data={"grant_type": GRANT_TYPE,
                                                          "assertion": assertion})
        except httpx.TimeoutException:
            raise TokenError(Outcome.RETRY, "token endpoint timed out") from None
        except httpx.HTTPError as exc:
            raise TokenError(Outcome.RETRY,
                             f"token endpoint unreachable ({type(exc).__name__})") from None
        status = resp.status_code
        if status >= 500 or status == 429:
            raise TokenError(Outcome.RETRY, f"token endpoint answered {status}", status,
                             parse_retry_after(resp.headers.get("retry-after")))
        body = _json_object(resp)
        if status != 200:
            error = str(body.get("error", "")) if body else ""
            if status in (400, 401, 403):
                # invalid_grant (bad signature, unknown key, clock skew), invalid_client, ...
                raise TokenError(Outcome.CREDENTIALS,
                                 f"token endpoint refused the service account: {status} "
                                 f"{error or 'no reason'}", status)
            raise TokenError(Outcome.RETRY, f"token endpoint answered {status}", status)
        value = body.get("access_token") if body else None
        expires_in = body.get("expires_in") if body else None
        if not isinstance(value, str) or not value or not isinstance(expires_in, int | float) \
                or isinstance(expires_in, bool) or expires_in <= 0:
            raise TokenError(Outcome.RETRY, "token endpoint answered garbage (no access_token "
                                            "and expires_in)", status)
        return _Token(value, time.monotonic() + float(expires_in))


def _json_object(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
