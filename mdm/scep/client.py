"""A SCEP client (RFC 8894) over httpx: what the iOS simulator uses, and what the tests drive.

``enroll`` does the whole dance: GetCACaps, GetCACert, PKCSReq signed with a throw-away
self-signed certificate of the key being certified, then CertPoll while the answer is PENDING.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import time
from dataclasses import dataclass
from typing import Literal

import httpx
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AttributeOID, NameOID

from mdm.pki import ca
from mdm.scep import envelope, messages
from mdm.scep.envelope import Encryption
from mdm.scep.protocol import (
    CONTENT_TYPE_CA_CERT,
    CONTENT_TYPE_PKI_MESSAGE,
    FailInfo,
    MessageType,
    PkiStatus,
    ScepFailure,
)


class ScepError(Exception):
    """The server refused (``fail_info`` set), or answered something a client cannot use."""

    def __init__(self, message: str, fail_info: FailInfo | None = None) -> None:
        super().__init__(message)
        self.fail_info = fail_info


class ScepPending(ScepError):
    """Still PENDING when the client stopped waiting; ``transaction_id`` identifies the request."""

    def __init__(self, transaction_id: str) -> None:
        super().__init__(f"request {transaction_id} is pending approval")
        self.transaction_id = transaction_id


class IssuerAndSubject(core.Sequence):  # type: ignore[misc, unused-ignore]  # asn1crypto is untyped
    """CertPoll content (RFC 8894 §3.3.3)."""

    _fields = [("issuer", asn1_x509.Name), ("subject", asn1_x509.Name)]


@dataclass(frozen=True)
class ServerInfo:
    capabilities: frozenset[str]
    certificates: tuple[x509.Certificate, ...]
    signer: x509.Certificate  # verifies CertRep signatures
    recipient: x509.Certificate  # what requests are encrypted to
    issuer: x509.Certificate  # the CA that issues our certificate


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def select_certificates(certs: list[x509.Certificate], caps: frozenset[str]) -> ServerInfo:
    """Pick the RA signing and encryption certificates (or the CA itself when there is no RA)."""
    if not certs:
        raise ScepError("GetCACert returned no certificates")
    ras = [c for c in certs if not _is_ca(c)]
    cas = [c for c in certs if _is_ca(c)]
    signer = next((c for c in ras if (u := _key_usage(c)) is None or u.digital_signature), None)
    recipient = next((c for c in ras if (u := _key_usage(c)) is None or u.key_encipherment), None)
    if not ras:
        signer = recipient = cas[0] if cas else certs[0]
    if signer is None or recipient is None:
        raise ScepError("GetCACert has RA certificates but none for signing or for encryption")
    issuer = next((c for c in cas if c.subject == recipient.issuer), None) or (cas[0] if cas else recipient)
    for ra in {signer, recipient} - {issuer}:
        try:
            ra.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise ScepError(
                f"RA certificate {ra.subject.rfc4514_string()} is not issued by the CA: {exc}"
            ) from None
    return ServerInfo(caps, tuple(certs), signer, recipient, issuer)


def transaction_id_for(public_key: rsa.RSAPublicKey) -> str:
    """RFC 8894 §3.2.1.1: a hash of the public key, so a re-sent request keeps its identity."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def build_csr(
    key: rsa.RSAPrivateKey, subject_cn: str, challenge: str | None
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    )
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    return builder.sign(key, hashes.SHA256())


def self_signed(key: rsa.RSAPrivateKey, subject_cn: str) -> x509.Certificate:
    """The throw-away certificate that signs a PKCSReq and receives the encrypted reply."""
    return ca.self_signed(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]), days=1)


# ---- transport ----------------------------------------------------------------------------------
async def get_capabilities(http: httpx.AsyncClient, url: str) -> frozenset[str]:
    response = await http.get(url, params={"operation": "GetCACaps"})
    _ok(response, "GetCACaps")
    return frozenset(line.strip() for line in response.text.splitlines() if line.strip())


async def get_ca_certificates(http: httpx.AsyncClient, url: str) -> list[x509.Certificate]:
    response = await http.get(url, params={"operation": "GetCACert"})
    _ok(response, "GetCACert")
    if response.headers.get("content-type", "").startswith(CONTENT_TYPE_CA_CERT):
        return [x509.load_der_x509_certificate(response.content)]
    return messages.certificates_of(response.content)


async def pki_operation(http: httpx.AsyncClient, url: str, message: bytes, *, post: bool = True) -> bytes:
    if post:
        response = await http.post(
            url,
            params={"operation": "PKIOperation"},
            content=message,
            headers={"Content-Type": CONTENT_TYPE_PKI_MESSAGE},
        )
    else:
        response = await http.get(
            url, params={"operation": "PKIOperation", "message": base64.b64encode(message).decode()}
        )
    _ok(response, "PKIOperation")
    return response.content


def _ok(response: httpx.Response, operation: str) -> None:
    if response.status_code != 200:
        raise ScepError(f"{operation}: HTTP {response.status_code}: {response.text[:200]}")


# ---- enrollment ----------------------------------------------------------------------------------
@dataclass
class _Exchange:
    http: httpx.AsyncClient
    url: str
    server: ServerInfo
    key: rsa.RSAPrivateKey
    identity: x509.Certificate
    transaction_id: str
    encryption: Encryption
    digest: str
    subject_key: rsa.RSAPrivateKey  # the key being certified (differs from ``key`` on renewal)

    async def send(self, kind: MessageType, content: bytes) -> messages.PkiMessage:
        nonce = messages.new_nonce()
        request = messages.request(
            message_type=kind,
            transaction_id=self.transaction_id,
            sender_nonce=nonce,
            envelope=envelope.encrypt(content, self.server.recipient, self.encryption),
            signer_cert=self.identity,
            signer_key=self.key,
            digest=self.digest,
        )
        raw = await pki_operation(
            self.http, self.url, request, post="POSTPKIOperation" in self.server.capabilities
        )
        try:
            reply = messages.parse(raw)
            reply.verify(self.server.signer)
        except (ScepFailure, ValueError) as exc:
            raise ScepError(f"CertRep does not verify against the RA certificate: {exc}") from None
        if reply.message_type != MessageType.CERT_REP:
            raise ScepError(f"expected CertRep, got messageType {reply.message_type}")
        if reply.transaction_id != self.transaction_id or reply.recipient_nonce != nonce:
            raise ScepError("CertRep does not answer this request (transactionID or recipientNonce differ)")
        return reply

    def certificate(self, reply: messages.PkiMessage) -> x509.Certificate:
        if reply.content is None:
            raise ScepError("CertRep SUCCESS without content")
        try:
            inner, _ = envelope.decrypt(reply.content, self.identity, self.key)
        except ScepFailure as exc:
            raise ScepError(f"cannot open the CertRep envelope: {exc}") from None
        ours = self.subject_key.public_key().public_numbers()
        for cert in messages.certificates_of(inner):
            public = cert.public_key()
            if isinstance(public, rsa.RSAPublicKey) and public.public_numbers() == ours:
                return cert
        raise ScepError("CertRep holds no certificate for our key")


def _failed(reply: messages.PkiMessage) -> ScepError:
    try:
        info: FailInfo | None = FailInfo(reply.fail_info or "")
    except ValueError:
        info = None
    name = info.name if info else reply.fail_info
    return ScepError(f"SCEP FAILURE {name}: {reply.fail_info_text or 'no reason given'}", info)


async def enroll(
    url: str,
    challenge: str,
    subject_cn: str,
    key: rsa.RSAPrivateKey,
    *,
    ssl_context: ssl.SSLContext | None,
    encryption: Literal["aes", "aes128", "aes256", "3des"] = "aes",
    digest: str = "sha256",
    poll_interval: float = 2.0,
    max_wait: float = 0.0,
    http_timeout: float = 30.0,
) -> x509.Certificate:
    """Enroll ``key`` for ``subject_cn`` with a challenge password; returns the issued certificate.

    ``encryption``: "aes" (AES-256-CBC), "aes128", "aes256" or "3des" for the request envelope.
    While the server answers PENDING the request is polled every ``poll_interval`` seconds for up
    to ``max_wait`` seconds, then ``ScepPending`` is raised. A refusal raises ``ScepError`` with
    the server's failInfo.
    """
    csr = build_csr(key, subject_cn, challenge)
    return await _run(
        url,
        MessageType.PKCS_REQ,
        csr,
        key,
        self_signed(key, subject_cn),
        key,
        ssl_context=ssl_context,
        encryption=encryption,
        digest=digest,
        poll_interval=poll_interval,
        max_wait=max_wait,
        http_timeout=http_timeout,
    )


async def renew(
    url: str,
    certificate: x509.Certificate,
    certificate_key: rsa.RSAPrivateKey,
    new_key: rsa.RSAPrivateKey,
    *,
    ssl_context: ssl.SSLContext | None,
    subject_cn: str | None = None,
    encryption: Literal["aes", "aes128", "aes256", "3des"] = "aes",
    digest: str = "sha256",
    poll_interval: float = 2.0,
    max_wait: float = 0.0,
    http_timeout: float = 30.0,
) -> x509.Certificate:
    """RenewalReq: a certificate for ``new_key``, authenticated by the current ``certificate``."""
    if subject_cn is None:
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        subject_cn = str(names[0].value) if names else "renewal"
    csr = build_csr(new_key, subject_cn, None)
    return await _run(
        url,
        MessageType.RENEWAL_REQ,
        csr,
        new_key,
        certificate,
        certificate_key,
        ssl_context=ssl_context,
        encryption=encryption,
        digest=digest,
        poll_interval=poll_interval,
        max_wait=max_wait,
        http_timeout=http_timeout,
    )


async def _run(
    url: str,
    kind: MessageType,
    csr: x509.CertificateSigningRequest,
    key: rsa.RSAPrivateKey,
    identity: x509.Certificate,
    identity_key: rsa.RSAPrivateKey,
    *,
    ssl_context: ssl.SSLContext | None,
    encryption: str,
    digest: str,
    poll_interval: float,
    max_wait: float,
    http_timeout: float,
) -> x509.Certificate:
    algorithms: dict[str, Encryption] = {
        "aes": "aes256",
        "aes128": "aes128",
        "aes256": "aes256",
        "3des": "3des",
    }
    if encryption not in algorithms:
        raise ValueError(f"encryption must be one of {', '.join(algorithms)}")
    async with httpx.AsyncClient(verify=ssl_context or True, timeout=http_timeout) as http:
        caps = await get_capabilities(http, url)
        server = select_certificates(await get_ca_certificates(http, url), caps)
        exchange = _Exchange(
            http,
            url,
            server,
            identity_key,
            identity,
            transaction_id_for(key.public_key()),
            algorithms[encryption],
            digest,
            key,
        )
        reply = await exchange.send(kind, csr.public_bytes(serialization.Encoding.DER))
        deadline = time.monotonic() + max_wait
        poll = IssuerAndSubject(
            {
                "issuer": asn1_x509.Name.load(server.issuer.subject.public_bytes()),
                "subject": asn1_x509.Name.load(csr.subject.public_bytes()),
            }
        ).dump()
        while reply.pki_status == PkiStatus.PENDING:
            if time.monotonic() + poll_interval > deadline:
                raise ScepPending(exchange.transaction_id)
            await asyncio.sleep(poll_interval)
            reply = await exchange.send(MessageType.CERT_POLL, poll)
        if reply.pki_status == PkiStatus.SUCCESS:
            return exchange.certificate(reply)
        raise _failed(reply)
