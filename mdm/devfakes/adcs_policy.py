"""The AD CS fake's CA database and policy module: templates, the Enrollment Agent check, the
request log with its dispositions (issued / pending / denied), and issuance from the test CA."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from mdm.devfakes import adcs_pages as pages
from mdm.devfakes import adcs_request
from mdm.devfakes.adcs_ca import CERTIFICATE_REQUEST_AGENT, EKUS, TestPki

NOT_PERMITTED = ("Denied by Policy Module  0x80094012, The permissions on the certificate "
                 "template do not allow the current user to enroll for this type of certificate.")
UNTRUSTED_AGENT = ("Denied by Policy Module  0x800b0109, A certificate chain processed, but "
                   "terminated in a root certificate which is not trusted by the trust provider.")
AGENT_WRONG_USAGE = ("Denied by Policy Module  0x800b0110, The certificate is not valid for the "
                     "requested usage.")
AGENT_EXPIRED = ("Denied by Policy Module  0x800b0101, A required certificate is not within its "
                 "validity period when verifying against the current system clock or the "
                 "timestamp in the signed file.")
AGENT_REQUIRED = ("Denied by Policy Module  0x80094809, The request is missing a required "
                  "signature policy attribute: the template requires an Enrollment Agent "
                  "signature.")
NO_REQUESTER = ("Denied by Policy Module  0x80094809, The request is missing the requester name "
                "of the enroll-on-behalf-of user.")
NO_SUCH_USER = "Denied by Policy Module  0x80070525, The specified account does not exist."
PENDING = "Taken Under Submission"
ISSUED = "Issued"

Status = Literal["issued", "pending", "denied"]


@dataclass(frozen=True)
class Template:
    """A certificate template: what the CA does with a request for it."""

    name: str
    outcome: Literal["issue", "pend", "deny"] = "issue"
    message: str = NOT_PERMITTED            # the disposition message when ``outcome == "deny"``
    validity_days: float = 365
    ekus: tuple[str, ...] = ("clientAuth",)  # keys of adcs_ca.EKUS
    subject: Literal["request", "requester"] = "request"
    requires_agent: bool = False
    upn: bool = False                       # a UPN SAN user@domain


def default_templates() -> dict[str, Template]:
    return {t.name: t for t in (
        Template("User", subject="requester", ekus=("clientAuth", "emailProtection"), upn=True),
        Template("MdmUser", subject="requester", requires_agent=True, upn=True,
                 ekus=("clientAuth", "emailProtection")),
        Template("MdmDevice", validity_days=365),
        Template("PendingUser", outcome="pend", subject="requester"),
        Template("DeniedUser", outcome="deny"),
    )}


@dataclass
class Request:
    """A row of the CA database."""

    id: int
    caller: str                       # the authenticated web caller (the MDM service account)
    template: str
    on_behalf_of: str | None          # "DOMAIN\\user" of an enroll-on-behalf-of request
    agent: x509.Certificate | None
    status: Status
    message: str
    csr: x509.CertificateSigningRequest | None = None
    certificate: x509.Certificate | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def certificate_pem(self) -> bytes | None:
        if self.certificate is None:
            return None
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def parse_attributes(text: str) -> dict[str, str]:
    """``CertAttrib``: ``Name:Value`` lines."""
    result: dict[str, str] = {}
    for line in text.replace("\r", "\n").split("\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            result[name.strip()] = value.strip()
    return result


class Policy:
    def __init__(self, pki: TestPki, templates: dict[str, Template], *, netbios: str,
                 agent_issuers: list[x509.Certificate], directory: set[str] | None = None) -> None:
        self.pki = pki
        # The domain's accounts (sAMAccountName, case-insensitive); None: every name exists.
        self.directory = {u.lower() for u in directory} if directory is not None else None
        self.templates = templates
        self.netbios = netbios
        self.agent_issuers = agent_issuers
        self._lock = threading.Lock()
        self._rows: dict[int, Request] = {}
        self._next = 1

    def log(self) -> list[Request]:
        with self._lock:
            return list(self._rows.values())

    def get(self, req_id: int) -> Request:
        with self._lock:
            return self._rows[req_id]

    def submit(self, text: str, cert_attrib: str, caller: str) -> Request:
        attributes = parse_attributes(cert_attrib)
        name = next((v for k, v in attributes.items() if k.lower() == "certificatetemplate"), "")
        with self._lock:
            row = Request(id=self._next, caller=caller, template=name, on_behalf_of=None,
                          agent=None, status="denied", message="", attributes=attributes)
            self._next += 1
            self._rows[row.id] = row
        try:
            submission = adcs_request.parse(text)
        except adcs_request.Refused as exc:
            return self._set(row, "denied", str(exc))
        row.csr, row.agent, row.on_behalf_of = (submission.csr, submission.agent,
                                                submission.requester_name)
        template = self.templates.get(name)
        if not name:
            return self._set(row, "denied", pages.NO_TEMPLATE)
        if template is None:
            return self._set(row, "denied", pages.UNSUPPORTED_TEMPLATE)
        refusal = self._check_agent(submission, template)
        if refusal:
            return self._set(row, "denied", refusal)
        if template.outcome == "deny":
            return self._set(row, "denied", template.message)
        if template.outcome == "pend":
            return self._set(row, "pending", PENDING)
        return self._issue(row)

    def approve(self, req_id: int) -> Request:
        row = self.get(req_id)
        if row.status != "pending":
            raise ValueError(f"request {req_id} is {row.status}, not pending")
        return self._issue(row)

    def deny(self, req_id: int, message: str) -> Request:
        row = self.get(req_id)
        if row.status != "pending":
            raise ValueError(f"request {req_id} is {row.status}, not pending")
        return self._set(row, "denied", message)

    def _set(self, row: Request, status: Status, message: str) -> Request:
        with self._lock:
            row.status, row.message = status, message
        return row

    def _check_agent(self, submission: adcs_request.Submission, template: Template) -> str | None:
        agent = submission.agent
        if agent is None:
            return AGENT_REQUIRED if template.requires_agent else None
        if not any(_issued_by(agent, issuer) for issuer in self.agent_issuers):
            return UNTRUSTED_AGENT
        try:
            ekus = agent.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return AGENT_WRONG_USAGE
        if CERTIFICATE_REQUEST_AGENT not in ekus:
            return AGENT_WRONG_USAGE
        now = datetime.now(UTC)
        if not agent.not_valid_before_utc <= now <= agent.not_valid_after_utc:
            return AGENT_EXPIRED
        requester = submission.requester_name
        if not requester:
            return NO_REQUESTER
        domain, sep, user = requester.partition("\\")
        if not sep or not user or domain.upper() != self.netbios.upper():
            return NO_SUCH_USER
        if self.directory is not None and user.lower() not in self.directory:
            return NO_SUCH_USER
        return None

    def _issue(self, row: Request) -> Request:
        template = self.templates[row.template]
        assert row.csr is not None
        user = None
        if row.on_behalf_of:
            user = row.on_behalf_of.partition("\\")[2]
        elif template.subject == "requester":
            user = row.caller.partition("@")[0].rpartition("\\")[2]
        subject = (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]) if user
                   else row.csr.subject)
        upn = f"{user}@{self.pki.domain}" if user and template.upn else None
        row.certificate = self.pki.issue(subject, row.csr.public_key(),
                                         days=template.validity_days,
                                         ekus=[EKUS[e] for e in template.ekus], upn=upn)
        return self._set(row, "issued", ISSUED)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
