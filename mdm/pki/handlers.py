"""Admin API of the PKI (scope ``pki``): issuance rules, issue, list, show, revoke."""

from __future__ import annotations

import base64

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from mdm.api.framework import PRINCIPAL_KEY, ApiRouter
from mdm.pki import schemas as s
from mdm.pki import schemas_requests as sr
from mdm.pki.ca import pem_chain
from mdm.pki.request_service import RequestService
from mdm.pki.service import CertificateService, Pending
from mdm.pki.services import CERTIFICATES, REQUESTS
from mdm.server.context import ctx_of

router = ApiRouter()  # installed on the admin listener by the API plugin

TAG = "certificates"


def _who(request: web.Request) -> str:
    return str(request[PRINCIPAL_KEY].name)


def _service(request: web.Request) -> CertificateService:
    return ctx_of(request).services[CERTIFICATES]


def _requests(request: web.Request) -> RequestService:
    return ctx_of(request).services[REQUESTS]


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
    change = await _service(request).set_rule(cert_type, changes, by=_who(request))
    if not change.trusted_sources:
        return s.RuleOut.of(change.rule)
    # An enterprise source in use: say whose CA certificates devices may now authenticate with.
    return s.RuleChangeOut(**change.rule.as_dict(), trusted_sources=change.trusted_sources)


# Requests before /certificates/{serial} as well.
@router.route("GET", "/certificates/requests",
              summary="Certificate requests a CA held pending (newest first)", tag=TAG, scope="pki",
              query=sr.RequestListQuery, response=sr.RequestPage)
async def list_certificate_requests(request: web.Request, query: sr.RequestListQuery) -> sr.RequestPage:
    rows, next_id = await _requests(request).page(
        limit=query.limit, before_id=min(int(query.cursor), 2**62) if query.cursor else None,
        status=query.status,
    )
    return sr.RequestPage(items=[sr.RequestOut.of(r) for r in rows],
                          next_cursor=None if next_id is None else str(next_id))


@router.route("GET", "/certificates/requests/{request_id}", summary="One certificate request", tag=TAG,
              scope="pki", response=sr.RequestOut)
async def get_certificate_request(request: web.Request, request_id: str) -> sr.RequestOut:
    return sr.RequestOut.of(await _requests(request).get(_request_id(request_id)))


@router.route("POST", "/certificates/requests/{request_id}/poll",
              summary="Ask the CA about a pending request now", tag=TAG, scope="pki",
              response=sr.RequestOut, errors=(409, 422, 503))
async def poll_certificate_request(request: web.Request, request_id: str) -> sr.RequestOut:
    return sr.RequestOut.of(await _requests(request).poll_now(_request_id(request_id)))


@router.route("DELETE", "/certificates/requests/{request_id}",
              summary="Cancel a pending request (stop polling; withdraw it at the CA too)", tag=TAG,
              scope="pki", response=sr.RequestOut, errors=(409,))
async def cancel_certificate_request(request: web.Request, request_id: str) -> sr.RequestOut:
    return sr.RequestOut.of(await _requests(request).cancel(_request_id(request_id), by=_who(request)))


def _request_id(text: str) -> int:
    from mdm.core.errors import NotFound

    if not text.isdigit() or len(text) > 18:
        raise NotFound(f"no certificate request {text!r} (ids are numbers)")
    return int(text)


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
              scope="pki", body=s.IssueIn, response=s.IssueOut, status=201, errors=(404, 422, 503))
async def issue_certificate(request: web.Request, body: s.IssueIn) -> s.IssueOut | web.Response:
    """201 and the certificate; 202 and the request when the CA holds it pending; 422
    certificate_denied with the CA's message; 503 when the source is unavailable."""
    issued = await _service(request).issue(
        user_name=body.user, cert_type=body.type, csr=body.csr, create_user=body.create_user,
        email=body.email, p12_password=body.p12_password, legacy_p12=body.legacy_p12,
    )
    if isinstance(issued, Pending):
        row = await _requests(request).get(issued.request.id)
        out = sr.PendingOut(request=sr.RequestOut.of(row), message=issued.request.description,
                            user_created=issued.user_created)
        return web.Response(text=out.model_dump_json(), status=202, content_type="application/json")
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
