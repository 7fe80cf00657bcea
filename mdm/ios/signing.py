"""Signing configuration profiles: CMS SignedData with the content attached (what iOS and Apple
Configurator accept as a signed ``.mobileconfig``), signed with the ``ios`` slot certificate.

The signature carries the signer certificate and its chain (issuing CA, root) so a device can
build the path; trust itself comes from the root CA payload or the device's trust store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from mdm.pki.keys import KeyError_, PrivateKey, load_key
from mdm.pki.slots import slot_paths

SIGNING_SLOT = "ios"


class SigningError(Exception):
    """The signing certificate or key is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class ProfileSigner:
    """A signing certificate, its key and its chain (issuer first, root last)."""

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_slot(cls, certs_dir: Path, slot: str = SIGNING_SLOT) -> ProfileSigner:
        """Load ``DATA_DIR/certs/<slot>.pem`` (leaf then chain) and ``<slot>.key``."""
        cert_path, key_path = slot_paths(certs_dir, slot)
        try:
            certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
        except FileNotFoundError:
            raise SigningError(
                f"{cert_path}: the '{slot}' certificate is missing "
                f"(run `mdm init` or `mdm certs set -t {slot}`)"
            ) from None
        except ValueError as exc:
            raise SigningError(f"{cert_path}: not a PEM certificate chain: {exc}") from None
        try:
            key = load_key(key_path)
        except KeyError_ as exc:
            raise SigningError(str(exc)) from None
        leaf = certs[0]
        if leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise SigningError(f"{key_path}: does not match the certificate in {cert_path}")
        return cls(leaf, key, tuple(certs[1:]))


def sign_profile(
    profile_bytes: bytes,
    certificate: x509.Certificate | ProfileSigner,
    key: PrivateKey | None = None,
    chain: Sequence[x509.Certificate] = (),
) -> bytes:
    """Return DER CMS SignedData over ``profile_bytes`` (content attached, SHA-256).

    Call as ``sign_profile(data, signer)`` with a :class:`ProfileSigner`, or
    ``sign_profile(data, cert, key, chain)``. CPU-bound: call it through ``asyncio.to_thread``
    on the event loop.
    """
    if isinstance(certificate, ProfileSigner):
        signer = certificate
    else:
        if key is None:
            raise TypeError("sign_profile: a key is required with a bare certificate")
        signer = ProfileSigner(certificate, key, tuple(chain))
    builder = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(profile_bytes)
        .add_signer(signer.certificate, signer.key, hashes.SHA256())
    )
    for extra in signer.chain:
        builder = builder.add_certificate(extra)
    # No DetachedSignature: the profile travels inside the SignedData. Binary (DER) output.
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
