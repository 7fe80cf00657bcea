"""A source that needs a PKCS#10 (an enterprise CA checks the requester's own signature) gets one
built from the key generated here; one given by the requester is passed through untouched."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from mdm.config import Config
from mdm.db.engine import Database
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import CertificateRequest, InternalCASource, issue
from mdm.pki.tables import CertType


class _CsrCheckingSource(InternalCASource):
    needs_csr = True

    def __init__(self, inner: InternalCASource) -> None:
        super().__init__(inner.ca)
        self.csrs: list[x509.CertificateSigningRequest | None] = []

    async def sign(
        self, request: CertificateRequest, public_key: CertificatePublicKeyTypes
    ) -> tuple[x509.Certificate, list[x509.Certificate]]:
        self.csrs.append(request.csr)
        return await super().sign(request, public_key)


async def test_a_generated_key_comes_with_a_csr_signed_by_it(db: Database, config: Config) -> None:
    source = _CsrCheckingSource(InternalCASource(CertificateAuthority.load(config.ca_dir)))
    request = CertificateRequest(type=CertType.MOBILE, common_name="alice", uid="alice",
                                 emails=("alice@example.com",))
    async with db.transaction() as session:
        issued = await issue(session, source, request)
    (csr,) = source.csrs
    assert csr is not None and csr.is_signature_valid
    assert csr.public_key() == issued.certificate.public_key()
    assert csr.subject.rfc4514_string() == "UID=alice,CN=alice"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]


async def test_an_internal_issue_builds_no_csr(db: Database, config: Config) -> None:
    seen: list[CertificateRequest] = []

    class _Recording(InternalCASource):
        async def sign(self, request: CertificateRequest, public_key: CertificatePublicKeyTypes
                       ) -> tuple[x509.Certificate, list[x509.Certificate]]:
            seen.append(request)
            return await super().sign(request, public_key)

    async with db.transaction() as session:
        source = _Recording(CertificateAuthority.load(config.ca_dir))
        await issue(session, source, CertificateRequest(type=CertType.MOBILE, common_name="bob"))
    assert seen[0].csr is None
