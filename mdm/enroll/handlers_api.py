"""Admin API: create, list, show and revoke enrollments (scope ``enroll``)."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.enroll import admin, qr, service
from mdm.enroll.admin import EnrollmentView
from mdm.enroll.mailing import mail_link
from mdm.enroll.seams import env_of
from mdm.server.context import ctx_of

router = ApiRouter()  # installed on the admin listener by the API plugin

StatusName = Literal["pending", "downloaded", "delivered", "expired", "revoked"]


class EnrollmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    platform: Literal["ios", "android"] = Field(
        description='"ios": a signed .mobileconfig; "android": the KES agent\'s enrollment package'
    )
    user: str = Field(max_length=255, description="user name; created if it does not exist")
    email: str | None = Field(default=None, max_length=320, description="send the link to this address")
    pkcs12: bool | None = Field(
        default=None,
        description="android only: put the user's PKCS#12 (certificate and key) into the package, for a "
        "reverse proxy that authenticates devices; default [enroll] android_pkcs12",
    )
    device_id: int | None = Field(
        default=None, ge=1, le=2**63 - 1,
        description="re-enroll this device: the new identity may take over the device's enrollment "
        "(otherwise only an enrollment of the device's owner may)",
    )


class MailStatus(BaseModel):
    to: str
    sent: bool
    error: str | None = None


class EnrollmentCreated(BaseModel):
    id: int
    uuid: str
    platform: str
    user: str
    user_created: bool
    status: str
    url: str
    expires_at: datetime
    qr_png: str = Field(description="base64-encoded PNG QR code: iOS the URL; Android the package without "
                        "its PKCS#12 (server, SPKI pin, token, URL) as compact JSON")
    email: MailStatus | None = Field(description="e-mail delivery outcome; null when no address was given")
    warnings: list[str] = Field(default_factory=list)
    for_device_id: int | None = Field(default=None, description="the device this link re-enrolls")


class EnrollmentOut(BaseModel):
    id: int
    uuid: str
    platform: str
    user: str
    email: str | None
    delivery: str
    identity: str
    status: StatusName
    created_at: datetime
    created_by: str | None
    expires_at: datetime
    downloaded_at: datetime | None
    revoked_at: datetime | None
    mailed_at: datetime | None
    mdm_profile_identifier: str
    cert_serial: str | None
    device_id: int | None
    for_device_id: int | None = Field(default=None, description="the device this enrollment re-enrolls")

    @classmethod
    def of(cls, v: EnrollmentView) -> EnrollmentOut:
        return cls(
            id=v.id, uuid=v.uuid, platform=v.platform, user=v.user, email=v.email, delivery=v.delivery,
            identity=v.identity, status=v.status, created_at=v.created_at,  # type: ignore[arg-type]
            created_by=v.created_by, expires_at=v.expires_at, downloaded_at=v.downloaded_at,
            revoked_at=v.revoked_at, mailed_at=v.mailed_at, mdm_profile_identifier=v.mdm_profile_identifier,
            cert_serial=v.cert_serial, device_id=v.device_id, for_device_id=v.for_device_id,
        )


class EnrollmentPage(BaseModel):
    items: list[EnrollmentOut]
    next_cursor: str | None


class EnrollmentListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=500, description="page size (1..500)")
    cursor: str | None = Field(default=None, max_length=18, pattern=r"^[0-9]+$")
    user: str | None = Field(default=None, max_length=255)
    status: StatusName | None = None


def _who(request: web.Request) -> str:
    return str(request[PRINCIPAL_KEY].name)


@router.route("POST", "/enrollments", summary="Create an enrollment: a one-time profile link (+ QR, e-mail)",
              tag="enrollments", scope="enroll", body=EnrollmentIn, response=EnrollmentCreated, status=201,
              errors=(404, 409, 422))
async def create_enrollment(request: web.Request, body: EnrollmentIn) -> EnrollmentCreated:
    ctx = ctx_of(request)
    env = env_of(ctx)
    created = await service.create_with_retry(
        env, ctx.db, platform=body.platform, user=body.user, email=body.email, created_by=_who(request),
        for_device_id=body.device_id, pkcs12=body.pkcs12,
    )
    assert created.url is not None
    png = await asyncio.to_thread(qr.png, created.qr_text or created.url)
    mail = None
    if created.enrollment.email:
        outcome = await mail_link(env, ctx.db, created.enrollment, created.user, created.url, png)
        mail = MailStatus(to=outcome.to, sent=outcome.sent, error=outcome.error)
    e = created.enrollment
    return EnrollmentCreated(
        id=e.id, uuid=e.uuid, platform=e.platform, user=created.user.name, user_created=created.user_created,
        status=e.status, url=created.url, expires_at=e.expires_at,
        qr_png=base64.b64encode(png).decode(), email=mail, warnings=list(created.warnings),
        for_device_id=e.for_device_id,
    )


@router.route("GET", "/enrollments", summary="List enrollments", tag="enrollments", scope="enroll",
              query=EnrollmentListQuery, response=EnrollmentPage)
async def list_enrollments(request: web.Request, query: EnrollmentListQuery) -> EnrollmentPage:
    views, next_id = await admin.list_enrollments(
        ctx_of(request).db, limit=query.limit, after_id=int(query.cursor) if query.cursor else None,
        user=query.user, status=query.status,
    )
    return EnrollmentPage(items=[EnrollmentOut.of(v) for v in views],
                          next_cursor=None if next_id is None else str(next_id))


@router.route("GET", "/enrollments/{id}", summary="Get one enrollment", tag="enrollments", scope="enroll",
              response=EnrollmentOut)
async def get_enrollment(request: web.Request, id: int) -> EnrollmentOut:
    return EnrollmentOut.of(await admin.get(ctx_of(request).db, id))


@router.route("DELETE", "/enrollments/{id}",
              summary="Revoke a pending enrollment link (Android: or an unused enrollment token)",
              tag="enrollments",
              scope="enroll", response=EnrollmentOut, errors=(409,))
async def revoke_enrollment(request: web.Request, id: int) -> EnrollmentOut:
    return EnrollmentOut.of(await admin.revoke(ctx_of(request).db, id, by=_who(request)))
