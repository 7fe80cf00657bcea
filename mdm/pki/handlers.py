"""Admin API of the PKI (scope ``pki``): issuance rules, issue, list, show, revoke."""

from __future__ import annotations

import base64

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.pki import schemas as s
from mdm.pki.ca import pem_chain
from mdm.pki.service import CertificateService
from mdm.pki.services import CERTIFICATES
from mdm.server.context import ctx_of

router = ApiRouter()  # installed on the admin listener by the API plugin

TAG = "certificates"


def _who(request: web.Request) -> str:
    return str(request[PRINCIPAL_KEY].name)


def _service(request: web.Request) -> CertificateService:
    return ctx_of(request).services[CERTIFICATES]


# Rules first: /certificates/rules must win over /certificates/{serial}.
@router.route("GET", "/certificates/rules", summary="Issuance rules of every certificate type", tag=TAG,
              scope="pki", response=s.RuleList)
async def list_certificate_rules(request: web.Request) -> s.RuleList:
    return s.RuleList(items=[s.RuleOut.of(r) for r in await _service(request).rules()])


@router.route("GET", "/certificates/rules/{cert_type}", summary="Issuance rule of one certificate type",
              tag=TAG, scope="pki", response=s.RuleOut)
async def get_certificate_rule(request: web.Request, cert_type: str) -> s.RuleOut:
    return s.RuleOut.of(await _service(request).rule(cert_type))


@router.route("PUT", "/certificates/rules/{cert_type}", summary="Change an issuance rule (fields given)",
              tag=TAG, scope="pki", body=s.RuleIn, response=s.RuleOut)
async def set_certificate_rule(request: web.Request, cert_type: str, body: s.RuleIn) -> s.RuleOut:
    changes = body.model_dump(exclude_unset=True)
    return s.RuleOut.of(await _service(request).set_rule(cert_type, changes, by=_who(request)))


@router.route("GET", "/certificates", summary="List issued certificates (newest first)", tag=TAG, scope="pki",
              query=s.CertificateListQuery, response=s.CertificatePage)
async def list_certificates(request: web.Request, query: s.CertificateListQuery) -> s.CertificatePage:
    rows, next_id = await _service(request).page(
        limit=query.limit, before_id=min(int(query.cursor), 2**62) if query.cursor else None,
        user=query.user, status=query.status, cert_type=query.type, device_id=query.device,
    )
    return s.CertificatePage(
        items=[s.CertificateOut.of(r, u) for r, u in rows],
        next_cursor=None if next_id is None else str(next_id),
    )


@router.route("POST", "/certificates", summary="Issue a user certificate per its type's rule", tag=TAG,
              scope="pki", body=s.IssueIn, response=s.IssueOut, status=201, errors=(404,))
async def issue_certificate(request: web.Request, body: s.IssueIn) -> s.IssueOut:
    issued = await _service(request).issue(
        user_name=body.user, cert_type=body.type, csr=body.csr, create_user=body.create_user,
        email=body.email, p12_password=body.p12_password, legacy_p12=body.legacy_p12,
    )
    identity = issued.identity
    return s.IssueOut(
        certificate=s.CertificateOut.of(identity.record, issued.owner),
        certificate_pem=identity.certificate.public_bytes(serialization.Encoding.PEM).decode(),
        chain_pem=pem_chain(identity.chain).decode(),
        pkcs12=None if issued.pkcs12 is None else base64.b64encode(issued.pkcs12).decode(),
        p12_password=issued.generated_password,
        user_created=issued.user_created,
    )


@router.route("GET", "/certificates/{serial}", summary="One certificate with its PEM", tag=TAG, scope="pki",
              response=s.CertificateDetail)
async def get_certificate(request: web.Request, serial: str) -> s.CertificateDetail:
    record, owner = await _service(request).certificate(serial)
    return s.CertificateDetail.detail(record, owner)


@router.route("POST", "/certificates/{serial}/revoke", summary="Revoke a certificate (CRL updated at once)",
              tag=TAG, scope="pki", body=s.RevokeIn, response=s.CertificateOut, errors=(409,))
async def revoke_certificate(request: web.Request, serial: str, body: s.RevokeIn) -> s.CertificateOut:
    record, owner = await _service(request).revoke(serial, body.reason, by=_who(request))
    return s.CertificateOut.of(record, owner)
