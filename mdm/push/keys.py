"""Typed keys of the push services in ``ServerContext.services``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mdm.push.dispatcher import PushDispatcher
from mdm.server.context import ServiceKey

# The state of the APNs push certificate (topic, expiry, environment, ...), shown under
# "certificate" by GET /api/v1/push/status: set by whoever owns the certificate (the APNs plugin).
CertificateStatus = Callable[[], Awaitable[dict[str, Any] | None]]

DISPATCHER = ServiceKey("push.dispatcher", PushDispatcher)
CERTIFICATE_STATUS: ServiceKey[CertificateStatus] = ServiceKey("push.certificate_status")
