"""Admin API of the PKI (scope ``pki``): issuance rules, issue, list, show, revoke."""

from __future__ import annotations

import asyncio
import base64
import secrets

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.pki import lifecycle, pkcs12, rules, services
from mdm.pki import schemas as s
from mdm.pki.ca import pem_chain
from mdm.server.context import ctx_of

router = ApiRouter()  # installed on the admin listener by the API plugin

TAG = "certificates"


def _who(request: web.Request) -> str:
    return str(request[PRINCIPAL_KEY].name)


# Rules first: /certificates/rules must win over /certificates/{serial}.
@router.route("GET", "/certificates/rules", summary="Issuance rules of every certificate type", tag=TAG,
              scope="pki", response=s.RuleList)
async def list_certificate_rules(request: web.Request) -> s.RuleList:
    async with ctx_of(request).db.session() as session:
        return s.RuleList(items=[s.RuleOut.of(r) for r in await rules.all_rules(session)])


@router.route("GET", "/certificates/rules/{cert_type}", summary="Issuance rule of one certificate type",
              tag=TAG, scope="pki", response=s.RuleOut)
async def get_certificate_rule(request: web.Request, cert_type: str) -> s.RuleOut:
    async with ctx_of(request).db.session() as session:
        return s.RuleOut.of(await rules.get_rule(session, cert_type))


@router.route("PUT", "/certificates/rules/{cert_type}", summary="Change an issuance rule (fields given)",
              tag=TAG, scope="pki", body=s.RuleIn, response=s.RuleOut)
async def set_certificate_rule(request: web.Request, cert_type: str, body: s.RuleIn) -> s.RuleOut:
    changes = body.model_dump(exclude_unset=True)
    async with ctx_of(request).db.transaction() as session:
        return s.RuleOut.of(await rules.set_rule(session, cert_type, changes, by=_who(request)))


@router.route("GET", "/certificates", summary="List issued certificates (newest first)", tag=TAG, scope="pki",
              query=s.CertificateListQuery, response=s.CertificatePage)
async def list_certificates(request: web.Request, query: s.CertificateListQuery) -> s.CertificatePage:
    async with ctx_of(request).db.session() as session:
        rows, next_id = await lifecycle.list_certificates(
            session, limit=query.limit, before_id=min(int(query.cursor), 2**62) if query.cursor else None,
            user=query.user, status=query.status, cert_type=query.type, device_id=query.device,
        )
    return s.CertificatePage(
        items=[s.CertificateOut.of(r, u) for r, u in rows],
        next_cursor=None if next_id is None else str(next_id),
    )


@router.route("POST", "/certificates", summary="Issue a user certificate per its type's rule", tag=TAG,
              scope="pki", body=s.IssueIn, response=s.IssueOut, status=201, errors=(404,))
async def issue_certificate(request: web.Request, body: s.IssueIn) -> s.IssueOut:
    ctx = ctx_of(request)
    public_key = lifecycle.load_csr(body.csr) if body.csr else None
    generated = None
    if public_key is None and not body.p12_password:
        generated = secrets.token_urlsafe(18)
    async with ctx.db.transaction() as session:
        result = await lifecycle.issue_for_user(
            session, services.sources(ctx), user_name=body.user, cert_type=body.type, public_key=public_key,
            create_user=body.create_user, email=body.email,
        )
        out = s.CertificateOut.of(result.identity.record, result.user.name)
    identity = result.identity
    p12 = None
    password = body.p12_password or generated
    if identity.key is not None and password:
        p12_bytes = await asyncio.to_thread(
            pkcs12.export, identity.key, identity.certificate, identity.chain, password,
            name=f"{body.user} ({body.type})", legacy=body.legacy_p12,
        )
        p12 = base64.b64encode(p12_bytes).decode()
    return s.IssueOut(
        certificate=out,
        certificate_pem=identity.certificate.public_bytes(serialization.Encoding.PEM).decode(),
        chain_pem=pem_chain(identity.chain).decode(),
        pkcs12=p12,
        p12_password=generated,
        user_created=result.user_created,
    )


@router.route("GET", "/certificates/{serial}", summary="One certificate with its PEM", tag=TAG, scope="pki",
              response=s.CertificateDetail)
async def get_certificate(request: web.Request, serial: str) -> s.CertificateDetail:
    async with ctx_of(request).db.session() as session:
        record = await lifecycle.get(session, serial)
        return s.CertificateDetail.detail(record, await lifecycle.owner_name(session, record))


@router.route("POST", "/certificates/{serial}/revoke", summary="Revoke a certificate (CRL updated at once)",
              tag=TAG, scope="pki", body=s.RevokeIn, response=s.CertificateOut, errors=(409,))
async def revoke_certificate(request: web.Request, serial: str, body: s.RevokeIn) -> s.CertificateOut:
    ctx = ctx_of(request)
    async with ctx.db.transaction() as session:
        record = await lifecycle.revoke(session, serial, body.reason, by=_who(request))
        out = s.CertificateOut.of(record, await lifecycle.owner_name(session, record))
    await services.revocation(ctx).after_revoke(record.serial)
    return out
