"""Clients and fixtures for tests against the AD CS fake: a Negotiate (gssapi, SPNEGO) and an NTLM
(pyspnego) ``httpx.Auth``, CSRs, and enroll-on-behalf-of CMS requests built with asn1crypto,
independently of ``mdm/adcs`` (so the fake's contract is checked by a second implementation).

Fixtures (import them into the test module)::

    from tests.adcs_fake_support import adcs_fake_fixture, adcs_user_fixture  # noqa: F401
    from tests.kdc import kdc_fixture, krb5_ccache_fixture  # noqa: F401

``adcs_user`` (session): a Kerberos user ``adcs-alice`` (principal, password).
``adcs_fake`` (module): a running ``AdcsFake`` offering Negotiate, NTLM and Basic (``BASIC``).
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Generator, Iterator
from pathlib import Path

import gssapi
import httpx
import pytest
import spnego
from asn1crypto import cms
from asn1crypto import core as asn1core
from asn1crypto import x509 as asn1x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from mdm.devfakes.adcs import AdcsFake
from mdm.devfakes.adcs_ca import KeyPair
from mdm.devfakes.adcs_request import REQUESTER_NAME_OID, NameValuePair
from tests.kdc import Kdc

SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
BASIC = ("svc", "svc-password")
NTLM_USERS = {"ntlm-svc": "ntlm-password"}


class NegotiateAuth(httpx.Auth):
    """SPNEGO/Kerberos for ``HTTP@host`` from the current ccache; checks the server's mutual
    token (``mutual`` is True once it did)."""

    def __init__(self, host: str = "localhost") -> None:
        self.host = host
        self.mutual = False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        name = gssapi.Name(f"HTTP@{self.host}", gssapi.NameType.hostbased_service)
        context = gssapi.SecurityContext(name=name, usage="initiate", mech=SPNEGO,
                                         flags=gssapi.RequirementFlag.mutual_authentication)
        token = context.step(b"")
        request.headers["Authorization"] = f"Negotiate {base64.b64encode(token).decode()}"
        response = yield request
        header = response.headers.get("WWW-Authenticate", "")
        if response.status_code != 401 and header.startswith("Negotiate "):
            context.step(base64.b64decode(header.split()[1]))
            self.mutual = context.complete


class NtlmAuth(httpx.Auth):
    """NTLM's two legs on one keep-alive connection (as IIS wants)."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        client = spnego.client(self.user, self.password, protocol="ntlm")
        request.headers["Authorization"] = f"NTLM {base64.b64encode(client.step() or b'').decode()}"
        response = yield request
        header = response.headers.get("WWW-Authenticate", "")
        if response.status_code != 401 or not header.startswith("NTLM "):
            return
        answer = client.step(base64.b64decode(header.split()[1])) or b""
        request.headers["Authorization"] = f"NTLM {base64.b64encode(answer).decode()}"
        yield request


def csr(common_name: str = "device-1", *, key: ec.EllipticCurvePrivateKey | None = None
        ) -> tuple[x509.CertificateSigningRequest, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256()), key


def pem(request: x509.CertificateSigningRequest) -> str:
    return request.public_bytes(serialization.Encoding.PEM).decode()


def on_behalf_of(request: x509.CertificateSigningRequest, agent: KeyPair,
                 requester: str | None = "CORP\\alice", *, digest_of: bytes | None = None) -> str:
    """A CMS SignedData (base64) wrapping ``request``, signed by the Enrollment Agent with the
    ``requestername`` attribute; ``digest_of`` puts a wrong messageDigest in."""
    inner = request.public_bytes(serialization.Encoding.DER)
    attributes = [
        cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        cms.CMSAttribute({"type": "message_digest",
                          "values": [hashlib.sha256(digest_of or inner).digest()]}),
    ]
    if requester is not None:
        pair = NameValuePair({"name": "requestername", "value": requester})
        attributes.append(cms.CMSAttribute({"type": REQUESTER_NAME_OID,
                                            "values": [asn1core.Any.load(pair.dump())]}))
    signed_attrs = cms.CMSAttributes(attributes)
    key = agent.key
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(signed_attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
    cert = asn1x509.Certificate.load(agent.cert.public_bytes(serialization.Encoding.DER))
    signer = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": cert.issuer, "serial_number": cert.serial_number})}),
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": signed_attrs,
        "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
        "signature": signature,
    })
    signed = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "data", "content": inner},
        "certificates": [cert],
        "signer_infos": [signer],
    })
    der = cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    return base64.b64encode(der).decode()


def submit(client: httpx.Client, fake: AdcsFake, request: str, template: str) -> httpx.Response:
    return client.post(f"{fake.url}/certfnsh.asp", data={
        "Mode": "newreq", "CertRequest": request,
        "CertAttrib": f"CertificateTemplate:{template}\r\n" if template else "",
        "FriendlyType": "Saved-Request Certificate", "TargetStoreFlags": "0", "SaveCert": "yes"})


def tls(fake: AdcsFake) -> ssl.SSLContext:
    """A client TLS context trusting the fake's root."""
    return ssl.create_default_context(cafile=str(fake.ca_file))


def kinit(kdc: Kdc, user: tuple[str, str], ccache: Path) -> None:
    kdc.kinit(user[0], user[1], ccache)


@pytest.fixture(scope="session", name="adcs_user")
def adcs_user_fixture(kdc: Kdc) -> tuple[str, str]:
    return kdc.add_user("adcs-alice")


@pytest.fixture(scope="module", name="adcs_fake")
def adcs_fake_fixture(kdc: Kdc) -> Iterator[AdcsFake]:
    with AdcsFake(keytab=kdc.service_keytab, auth=("negotiate", "ntlm", "basic"),
                  basic_users={BASIC[0]: BASIC[1]}, ntlm_users=NTLM_USERS) as fake:
        yield fake
