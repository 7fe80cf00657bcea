"""The generic HTTPS JSON transport (``[reporting] transport = "generic"``; the contract is
``docs/reporting.md``): one ``POST`` of a batch per call, over mutual TLS, signed with
HMAC-SHA256 over the timestamp and the exact body bytes.

Every answer of the receiver is classified (never raised): 200/202 with ``{"accepted": n}`` is
delivered, ``{"rejected": [...]}`` refuses those events (the others accepted), 401/403 is
``auth_failed``, 408/425/429/5xx a retry (Retry-After honoured), any other 4xx refuses the whole
batch; garbage, a closed connection, a timeout or a TLS failure is a retry with a precise reason.
Neither the HMAC key nor the signature is ever logged.

The shared pieces of the HTTP transports (the TLS context, classification of transport
exceptions, Retry-After) live here too; ``transport_ksc`` reuses them.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from mdm.reporting.seams import OutboundEvent, Outcome, SendResult

log = logging.getLogger("mdm.reporting.generic")

SIGNATURE_HEADER = "X-MDM-Signature"
TIMESTAMP_HEADER = "X-MDM-Timestamp"
SIGNATURE_VERSION = "v1"
# Status codes that mean "later", never "no".
RETRY_STATUSES = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 3600.0
MAX_ANSWER_BYTES = 1 << 20


@dataclass(frozen=True)
class ClientIdentity:
    """The client certificate (PEM, leaf first) and key presented for mutual TLS."""

    cert_file: str
    key_file: str
    # When to replace it (an identity issued from the internal CA); None: never (configured).
    renew_after: datetime | None = None


# Called when ``renew_after`` has passed: answers the new identity (issued and written to disk).
IdentityRenewer = Callable[[], Awaitable[ClientIdentity]]


# ---- shared by the HTTP transports ----------------------------------------------------------


def tls_context(ca_file: str, identity: ClientIdentity | None) -> ssl.SSLContext:
    """Verify the receiver against ``ca_file`` (or the system store), present ``identity``."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        context.load_cert_chain(identity.cert_file, identity.key_file)
    return context


def http_client(context: ssl.SSLContext, timeout: float, *, concurrency: int = 4) -> httpx.AsyncClient:
    """A pooled, long-lived client with bounded timeouts; HTTP/2 when the receiver offers it."""
    return httpx.AsyncClient(
        verify=context,
        http2=True,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency,
                            keepalive_expiry=60.0),
        trust_env=False,
        follow_redirects=False,
    )


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError) and not isinstance(
            current, ssl.SSLWantReadError | ssl.SSLWantWriteError
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


def classify_exception(exc: httpx.HTTPError) -> SendResult:
    """A failure of the exchange itself (no answer to judge): always a retry, with its reason."""
    if isinstance(exc, httpx.TimeoutException):
        return SendResult(Outcome.RETRY, "timeout", f"timeout ({type(exc).__name__})")
    tls = _ssl_cause(exc)
    if tls is not None:
        if isinstance(tls, ssl.SSLCertVerificationError):
            message = tls.verify_message or "certificate verify failed"
            if "certificate verify failed" not in message:
                message = f"certificate verify failed: {message}"
        else:
            message = tls.reason or str(tls)
        return SendResult(Outcome.RETRY, "tls_error", f"tls_error: {str(message).lower()}")
    if isinstance(exc, httpx.ConnectError):
        return SendResult(Outcome.RETRY, "connect_error", f"connect_error: {exc}"[:200])
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return SendResult(Outcome.RETRY, "connection_closed",
                          f"connection closed by the receiver ({type(exc).__name__})")
    return SendResult(Outcome.RETRY, "bad_response", f"bad_response: {type(exc).__name__}")


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None if absent."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), MAX_RETRY_AFTER)


def rfc3339(moment: datetime) -> str:
    """UTC, seconds and microseconds, ``Z``: ``2026-01-02T03:04:05.123456Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# ---- the generic contract -------------------------------------------------------------------


def event_json(event: OutboundEvent) -> dict[str, Any]:
    device = event.device
    return {
        "uuid": event.uuid,
        "type": event.type,
        "severity": event.severity,
        "created_at": rfc3339(event.created_at),
        "device_id": event.device_id,
        "user_id": event.user_id,
        "body": dict(event.body),
        "device": None if device is None else {
            "id": device.id,
            "protocol": device.protocol,
            "status": device.status,
            "name": device.name,
            "model": device.model,
            "os_version": device.os_version,
            "serial_number": device.serial_number,
            "udid": device.udid,
            "user": device.user,
            "last_seen_at": rfc3339(device.last_seen_at) if device.last_seen_at else None,
        },
    }


def batch_body(batch: Sequence[OutboundEvent]) -> bytes:
    return json.dumps({"events": [event_json(e) for e in batch]}, separators=(",", ":"),
                      ensure_ascii=False, default=str).encode()


def signature(key: bytes, timestamp: str, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256(key, timestamp + "." + body)>``."""
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def classify_answer(status: int, headers: Mapping[str, str], content: bytes,
                    batch: Sequence[OutboundEvent]) -> SendResult:
    """What the receiver's answer means for the batch (see docs/reporting.md)."""
    if status in (401, 403):
        return SendResult(Outcome.RETRY, "auth_failed", f"the receiver refused our credentials ({status})")
    if status in RETRY_STATUSES or status >= 500:
        return SendResult(Outcome.RETRY, f"http_{status}", f"the receiver answered {status}",
                          retry_after=retry_after(headers))
    if 400 <= status < 500:
        return SendResult(Outcome.REJECTED, f"http_{status}",
                          f"the receiver refused the batch ({status}): {_snippet(content)}")
    if status not in (200, 202):
        return SendResult(Outcome.RETRY, "bad_response", f"bad_response: unexpected status {status}")
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        return SendResult(Outcome.RETRY, "bad_response",
                          f"bad_response: content type {media or 'missing'!r}, not application/json")
    try:
        answer = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return SendResult(Outcome.RETRY, "bad_response", "bad_response: the body is not JSON")
    if not isinstance(answer, dict):
        return SendResult(Outcome.RETRY, "bad_response", "bad_response: the body is not a JSON object")
    return _accepted_or_rejected(answer, batch)


def _accepted_or_rejected(answer: dict[str, Any], batch: Sequence[OutboundEvent]) -> SendResult:
    rejected = answer.get("rejected")
    if rejected:
        ours = {e.uuid for e in batch}
        if not isinstance(rejected, list) or not all(
            isinstance(r, dict) and isinstance(r.get("uuid"), str) for r in rejected
        ):
            return SendResult(Outcome.RETRY, "bad_response", "bad_response: malformed rejected list")
        uuids = frozenset(r["uuid"] for r in rejected) & ours
        if not uuids:
            return SendResult(Outcome.RETRY, "bad_response", "bad_response: rejected names no event sent")
        first = next(r for r in rejected if r["uuid"] in uuids)
        return SendResult(Outcome.REJECTED, "refused",
                          f"{len(uuids)} event(s) refused, e.g. {first['uuid']}: "
                          f"{_snippet(str(first.get('reason', '')).encode())}", rejected=uuids)
    accepted = answer.get("accepted")
    if isinstance(accepted, bool) or not isinstance(accepted, int):
        return SendResult(Outcome.RETRY, "bad_response", "bad_response: no accepted count")
    if accepted != len(batch):
        return SendResult(Outcome.RETRY, "bad_response",
                          f"bad_response: accepted {accepted} of {len(batch)} without a refusal")
    return SendResult(Outcome.DELIVERED, "ok")


def _snippet(content: bytes, limit: int = 120) -> str:
    text = content[:limit * 2].decode("utf-8", "replace").replace("\n", " ").strip()
    return text[:limit]


class GenericTransport:
    """``send`` POSTs a batch to ``url``; one pooled client, rebuilt when the identity renews."""

    name = "generic"

    def __init__(
        self,
        url: str,
        *,
        ca_file: str = "",
        identity: ClientIdentity | None = None,
        hmac_key: bytes | None = None,
        timeout: float = 30.0,
        renew_identity: IdentityRenewer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.ca_file = ca_file
        self.identity = identity
        self._key = hmac_key
        self.timeout = timeout
        self._renew = renew_identity
        self._clock = clock
        self._lock = asyncio.Lock()
        self._client = http_client(tls_context(ca_file, identity), timeout)

    def __repr__(self) -> str:  # never the key
        return f"<GenericTransport {self.url} signed={self._key is not None}>"

    async def send(self, batch: Sequence[OutboundEvent]) -> SendResult:
        if not batch:
            return SendResult(Outcome.DELIVERED, "ok")
        await self._renew_if_due()
        body = await asyncio.to_thread(batch_body, batch) if len(batch) > 200 else batch_body(batch)
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Content-Length": str(len(body))}
        if self._key is not None:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self._key, timestamp, body)
        try:
            stream = self._client.stream("POST", self.url, content=_once(body), headers=headers)
            async with stream as response:
                content = await _read_bounded(response)
        except httpx.HTTPError as exc:
            result = classify_exception(exc)
        except ValueError as exc:  # an answer larger than we read
            result = SendResult(Outcome.RETRY, "bad_response", f"bad_response: {exc}")
        else:
            result = classify_answer(response.status_code, response.headers, content, batch)
        if result.outcome is not Outcome.DELIVERED:
            log.info("reporting: %d event(s) to %s: %s (%s)", len(batch), self.url, result.outcome.value,
                     result.detail)
        return result

    async def _renew_if_due(self) -> None:
        identity = self.identity
        if self._renew is None or identity is None or identity.renew_after is None:
            return
        if datetime.now(UTC) < identity.renew_after:
            return
        async with self._lock:
            if self.identity is not identity:
                return
            try:
                fresh = await self._renew()
            except Exception as exc:  # keep the current certificate; it is still valid
                log.warning("reporting: renewing the core-link client certificate failed: %s", exc)
                return
            old, self.identity = self._client, fresh
            self._client = http_client(tls_context(self.ca_file, fresh), self.timeout)
            await old.aclose()
            log.info("reporting: core-link client certificate renewed (%s)", fresh.cert_file)

    async def aclose(self) -> None:
        await self._client.aclose()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    """The body as a one-chunk stream. httpx and httpcore keep every request in a reference cycle
    that only the garbage collector frees (rarely, in the server: ``GC_THRESHOLDS``); given bytes,
    the request holds the whole body until then, a body per batch during a catch-up. A stream
    lets the body go as soon as it is written (Content-Length is set, so it is not chunked)."""
    yield body


async def _read_bounded(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ValueError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
