"""What every push transport (APNs, FCM) answers, so that the dispatcher treats them alike.

A transport sends one wake-up to one device token and classifies the answer into an ``Outcome``;
the dispatcher (``mdm.push.dispatcher``) decides what follows: a sent push is done, an invalid
token is marked invalid until the device sends a newer one, a transient failure is retried with
backoff (honouring ``retry_after``), and a credential failure opens the transport's circuit
breaker and raises an alert instead of a retry storm.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol


class Outcome(enum.StrEnum):
    SENT = "sent"
    # The token is no longer valid (APNs BadDeviceToken, DeviceTokenNotForTopic, 410 Unregistered;
    # FCM UNREGISTERED, SENDER_ID_MISMATCH): never retried; the device is not pushed again until a
    # newer token arrives (iOS TokenUpdate).
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - an outcome name, not a secret
    # Try again later: 429 (this device or the project is throttled), 500, 503, a reset stream, a
    # connection that closed or timed out. ``retry_after`` when the server said.
    RETRY = "retry"
    # Our credentials are refused (APNs BadCertificate, BadCertificateEnvironment, 403 Forbidden;
    # FCM THIRD_PARTY_AUTH_ERROR, 401): alert, open the circuit; nothing is retried until the
    # certificate or key is replaced.
    CREDENTIALS = "credentials"
    # This message can never succeed as built (APNs BadTopic, PayloadEmpty, ...; FCM
    # INVALID_ARGUMENT): alert, no retry.
    REJECTED = "rejected"
    # Not sent: the circuit is open (credentials refused earlier) or no credentials are configured.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class PushResult:
    outcome: Outcome
    # The server's reason ("BadDeviceToken", "UNREGISTERED", "timeout", ...) or "" when sent.
    reason: str = ""
    status: int | None = None
    retry_after: float | None = None  # seconds, when the server said (Retry-After)
    # The server's id of the notification (apns-id / FCM message name), when it gave one.
    message_id: str | None = None


class WakeTarget(NamedTuple):
    """One device to wake (a tuple: the dispatcher makes one per push; a frozen dataclass's
    ``__init__`` cost a microsecond of it)."""

    device_id: int
    # APNs: the device token as hex (from TokenUpdate); FCM: the registration token.
    token: str
    # APNs: the PushMagic string from TokenUpdate; unused by FCM.
    push_magic: str = ""


class PushTransport(Protocol):
    """Sends one wake-up. Never raises for a server answer or a network failure: it classifies it.
    Safe to call concurrently (many streams over a few connections)."""

    async def send(self, target: WakeTarget, *, expires: datetime | None = None) -> PushResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ApnsIdentity:
    """The MDM push certificate and its key (PEM), and the topic (the certificate's subject UID).
    Built by ``mdm.push.identity`` from the configured files; handed to the APNs client, which can
    take a renewed one with the same topic while running."""

    cert_pem: bytes
    key_pem: bytes
    topic: str
    not_after: datetime
    development: bool = False  # mdm init's self-signed stand-in: Apple would refuse it

    def __repr__(self) -> str:  # never the key
        return f"ApnsIdentity(topic={self.topic!r}, not_after={self.not_after:%Y-%m-%d})"


@dataclass(frozen=True)
class ProxySettings:
    """An outbound HTTP CONNECT proxy ([push] proxy_*), with optional Basic login."""

    host: str
    port: int
    login: str = ""
    password: str = ""

    def __repr__(self) -> str:  # never the password
        return f"ProxySettings({self.host}:{self.port}, login={'yes' if self.login else 'no'})"
