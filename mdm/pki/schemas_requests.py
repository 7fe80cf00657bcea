"""Admin API models of the pending certificate requests (``/api/v1/certificates/requests``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from mdm.api.schemas import PageQuery, Timestamp
from mdm.pki.tables import CertificateRequestRecord, RequestStatus

RequestStatusName = Literal["pending", "issued", "denied", "failed", "cancelled"]
assert set(RequestStatusName.__args__) == {s.value for s in RequestStatus}  # type: ignore[attr-defined]


class RequestListQuery(PageQuery):
    status: RequestStatusName | None = None


class RequestOut(BaseModel):
    id: int
    source: str
    ca_request_id: str = Field(description="the CA's own request id")
    cert_type: str
    user_id: int | None
    device_id: int | None
    common_name: str
    template: str | None
    status: str
    message: str | None = Field(description="the CA's message (pending, denied) or why it failed")
    purpose: str = Field(description="what asked: api, scep:<transaction>, enrollment:<id>, kes:<device>")
    serial: str | None = Field(description="the certificate's serial once issued")
    attempts: int
    next_poll_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, r: CertificateRequestRecord) -> RequestOut:
        return cls(
            id=r.id, source=r.source, ca_request_id=r.ca_request_id, cert_type=r.cert_type,
            user_id=r.user_id, device_id=r.device_id, common_name=r.common_name, template=r.template,
            status=r.status, message=r.message, purpose=r.purpose, serial=r.serial, attempts=r.attempts,
            next_poll_at=r.next_poll_at if r.status == RequestStatus.PENDING.value else None,
            created_at=r.created_at, updated_at=r.updated_at,
        )


class RequestPage(BaseModel):
    items: list[RequestOut]
    next_cursor: str | None


class PendingOut(BaseModel):
    """202 of ``POST /certificates``: the source holds the request."""

    pending: bool = True
    request: RequestOut
    message: str
    user_created: bool
