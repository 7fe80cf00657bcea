"""The reference product's Open API transport (``[reporting] transport = "ksc"``).

- Log in: ``POST /api/v1.0/login`` with ``Authorization: KSCBasic user="<b64>", pass="<b64>",
  domain="<b64>", internal="0|1"``; the session token (the ``PxgRetVal`` of the answer, or its
  ``X-KSC-Session`` header) is kept and sent as ``X-KSC-Session`` on every call.
- A 401/403 on a call logs in again once (one login for all the calls that met the same expired
  session), then repeats the call; a second refusal is ``RETRY auth_failed``.
- Each event is one ``POST /api/v1.0/EventNotificationsApi.PublishEvent`` with
  ``{"wstrEventType", "pEventBody", "tmBirthTime"}`` (``ksc_params``). A batch runs as one
  sequential chain per device (order kept) with at most ``concurrency`` chains at once.
- Outcome of a batch: any retryable failure makes it ``RETRY`` (events already published are sent
  again next time; the core de-duplicates by ``KLMDM_EVENT_ID``); otherwise the events the server
  refused with a params error (``PxgError`` of module ``KLPAR``, or another 4xx) are ``REJECTED``
  one by one, the others delivered.

Neither the password nor the session token is ever logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from mdm.reporting.ksc_params import event_body, event_type, ksc_datetime
from mdm.reporting.seams import OutboundEvent, Outcome, SendResult
from mdm.reporting.transport_generic import (
    RETRY_STATUSES,
    ClientIdentity,
    classify_exception,
    http_client,
    retry_after,
    tls_context,
)

log = logging.getLogger("mdm.reporting.ksc")

API = "/api/v1.0"
LOGIN = f"{API}/login"
PUBLISH = f"{API}/EventNotificationsApi.PublishEvent"
SESSION_HEADER = "X-KSC-Session"
# Errors of the params library: the event's body itself is refused (re-sending cannot help).
PARAMS_MODULES = frozenset({"KLPAR"})


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def kscbasic(user: str, password: str, domain: str = "", internal: bool = False) -> str:
    """The ``Authorization`` value of a login (a secret: it carries the password)."""
    return (f'KSCBasic user="{_b64(user)}", pass="{_b64(password)}", domain="{_b64(domain)}", '
            f'internal="{"1" if internal else "0"}"')


class _AuthFailed(Exception):
    def __init__(self, result: SendResult) -> None:
        super().__init__(result.detail)
        self.result = result


class KscTransport:
    name = "ksc"

    def __init__(
        self,
        base_url: str,
        *,
        user: str,
        password: str,
        domain: str = "",
        internal: bool = False,
        ca_file: str = "",
        identity: ClientIdentity | None = None,
        timeout: float = 30.0,
        concurrency: int = 4,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self._authorization = kscbasic(user, password, domain, internal)
        self.concurrency = max(1, concurrency)
        self._client = http_client(tls_context(ca_file, identity), timeout, concurrency=self.concurrency)
        self._session: str | None = None
        self._login_lock = asyncio.Lock()
        self.logins = 0

    def __repr__(self) -> str:  # never the password or the session
        return f"<KscTransport {self.base_url} user={self.user!r}>"

    # -- session ------------------------------------------------------------------------------

    async def _login(self, stale: str | None) -> str:
        """A valid session token: the current one unless it is ``stale`` (then log in again)."""
        async with self._login_lock:
            if self._session is not None and self._session != stale:
                return self._session
            self._session = None
            self.logins += 1
            response = await self._client.post(
                self.base_url + LOGIN, content=b"{}",
                headers={"Authorization": self._authorization, "Content-Type": "application/json"},
            )
            if response.status_code in (401, 403):
                raise _AuthFailed(SendResult(
                    Outcome.RETRY, "auth_failed",
                    f"the Open API refused the login of {self.user!r} ({response.status_code})"))
            if response.status_code != 200:
                raise _AuthFailed(_status_result(response, "login"))
            token = _ret_val(response.content) or response.headers.get(SESSION_HEADER)
            if not token:
                raise _AuthFailed(SendResult(Outcome.RETRY, "bad_response",
                                             "bad_response: the login answer carries no session"))
            self._session = token
            return token

    # -- one event ----------------------------------------------------------------------------

    async def _publish(self, event: OutboundEvent) -> SendResult:
        payload = json.dumps({
            "wstrEventType": event_type(event),
            "pEventBody": event_body(event),
            "tmBirthTime": ksc_datetime(event.created_at),
        }, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            token = await self._login(None)
            for attempt in range(2):
                response = await self._client.post(
                    self.base_url + PUBLISH, content=payload,
                    headers={SESSION_HEADER: token, "Content-Type": "application/json"},
                )
                if response.status_code not in (401, 403):
                    return _publish_result(response, event)
                if attempt == 0:
                    token = await self._login(token)
            return SendResult(Outcome.RETRY, "auth_failed",
                              f"the Open API refused a fresh session ({response.status_code})")
        except _AuthFailed as exc:
            return exc.result
        except httpx.HTTPError as exc:
            return classify_exception(exc)

    # -- a batch ------------------------------------------------------------------------------

    async def send(self, batch: Sequence[OutboundEvent]) -> SendResult:
        chains: dict[int | None, list[OutboundEvent]] = {}
        for event in batch:
            chains.setdefault(event.device_id, []).append(event)
        queue = list(chains.values())
        rejected: set[str] = set()
        failures: list[SendResult] = []
        published = 0

        async def worker() -> None:
            nonlocal published
            while queue and not failures:
                chain = queue.pop(0)
                for event in chain:
                    if failures:
                        return
                    result = await self._publish(event)
                    if result.outcome is Outcome.RETRY:
                        failures.append(result)
                        return
                    if result.outcome is Outcome.REJECTED:
                        rejected.add(event.uuid)
                        log.info("reporting: the Open API refused event %s: %s", event.uuid, result.detail)
                    else:
                        published += 1

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(queue)))))
        if failures:
            first = failures[0]
            log.info("reporting: %d of %d event(s) published to %s, then %s", published, len(batch),
                     self.base_url, first.detail)
            return SendResult(Outcome.RETRY, first.reason,
                              f"{first.detail} ({published} of {len(batch)} published)",
                              retry_after=first.retry_after)
        if rejected:
            return SendResult(Outcome.REJECTED, "refused",
                              f"{len(rejected)} event(s) refused by the Open API",
                              rejected=frozenset(rejected))
        return SendResult(Outcome.DELIVERED, "ok")

    async def aclose(self) -> None:
        await self._client.aclose()


def _ret_val(content: bytes) -> str | None:
    try:
        answer = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    value = answer.get("PxgRetVal") if isinstance(answer, dict) else None
    return value if isinstance(value, str) and value else None


def _pxg_error(content: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    error = answer.get("PxgError") if isinstance(answer, dict) else None
    return error if isinstance(error, dict) else None


def _status_result(response: httpx.Response, what: str) -> SendResult:
    status = response.status_code
    if status in RETRY_STATUSES or status >= 500:
        return SendResult(Outcome.RETRY, f"http_{status}", f"the Open API answered {status} to {what}",
                          retry_after=retry_after(response.headers))
    return SendResult(Outcome.RETRY, "bad_response", f"bad_response: {status} to {what}")


def _publish_result(response: httpx.Response, event: OutboundEvent) -> SendResult:
    status = response.status_code
    error = _pxg_error(response.content)
    if error is not None:
        message = str(error.get("message", ""))[:120]
        text = f"PxgError {error.get('module', '?')}:{error.get('code', '?')} {message}"
        if error.get("module") in PARAMS_MODULES or (400 <= status < 500 and status not in RETRY_STATUSES):
            return SendResult(Outcome.REJECTED, "refused", text, rejected=frozenset({event.uuid}))
        return SendResult(Outcome.RETRY, "ksc_error", text, retry_after=retry_after(response.headers))
    if status == 200:
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            answer = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            answer = None
        if media != "application/json" or not isinstance(answer, dict):
            return SendResult(Outcome.RETRY, "bad_response", "bad_response: PublishEvent answer is not JSON")
        return SendResult(Outcome.DELIVERED, "ok")
    if status in RETRY_STATUSES or status >= 500 or status in (404, 405):
        # 404/405: the endpoint is not there (a wrong url): configuration, not the event.
        return SendResult(Outcome.RETRY, f"http_{status}", f"the Open API answered {status} to PublishEvent",
                          retry_after=retry_after(response.headers))
    return SendResult(Outcome.REJECTED, f"http_{status}", f"the Open API refused the event ({status})",
                      rejected=frozenset({event.uuid}))
