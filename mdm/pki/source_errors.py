"""What a certificate source can answer besides a certificate (enterprise PKI connectors).

``CertificatePending``: the CA holds the request for a CA manager's approval; ``request_id`` is
the CA's own identifier, handed back to ``CertificateSource.poll``. ``CertificateDenied``: the CA
refused the request, with its message. ``SourceUnavailable``: the CA could not be asked (down,
slow, an error page, authentication failed): nothing was issued, the caller may retry later.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdm.core.errors import ServiceError


@dataclass(frozen=True)
class Refusal:
    """What ``mdm.pki.requests.request_certificate`` attaches to a denied or failed request, so
    that ``refusals_recorded`` can write its event after the caller's transaction rolled back."""

    cert_type: str
    subject: str
    purpose: str
    user_id: int | None
    device_id: int | None


class CertificatePending(ServiceError):
    """Raised by ``sign``/``poll`` while the CA keeps the request pending."""

    status = 202
    code = "certificate_pending"

    def __init__(self, source: str, request_id: str, message: str = "") -> None:
        super().__init__(
            f"certificate request {request_id} is pending at {source}" + (f": {message}" if message else ""),
            source=source, request_id=request_id,
        )
        self.source = source
        self.request_id = request_id
        self.ca_message = message


class CertificateDenied(ServiceError):
    """The CA refused the request (its own message, e.g. the template denies the requester)."""

    status = 422
    code = "certificate_denied"

    def __init__(self, source: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{source} denied the certificate request: {message}", source=source,
                         request_id=request_id)
        self.source = source
        self.request_id = request_id
        self.ca_message = message
        self.refusal: Refusal | None = None
        self.recorded = False


class SourceUnavailable(ServiceError):
    """The CA could not be asked or answered something that is not an outcome."""

    status = 503
    code = "certificate_source_unavailable"

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"certificate source {source} is unavailable: {message}", source=source)
        self.source = source
        self.reason = message
        self.refusal: Refusal | None = None
        self.recorded = False
