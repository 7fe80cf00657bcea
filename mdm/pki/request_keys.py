"""Keys generated here for a request a certificate source holds pending (the PKCS#12 of an iOS
enrollment profile): kept in ``certificate_requests.encrypted_key`` until the certificate arrives.

At rest they are PKCS#8 ``ENCRYPTED PRIVATE KEY`` (cryptography's best available encryption:
PBES2, AES-256) under the CA passphrase when one is configured, else under a random secret in
``DATA_DIR/ca/request-keys.secret`` (mode 0600, created on first use). Never logged.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from mdm.core.errors import ServiceError
from mdm.pki.keys import PrivateKey, write_private

SECRET_FILE = "request-keys.secret"  # noqa: S105 - a file name, not a secret


class SealedKeyUnreadable(ServiceError):
    status = 503
    code = "request_key_unreadable"


class RequestKeys:
    """Seals and opens generated keys of pending requests."""

    def __init__(self, ca_dir: Path, passphrase: bytes | None) -> None:
        self._ca_dir = ca_dir
        self._passphrase = passphrase

    def _secret(self) -> bytes:
        if self._passphrase:
            return self._passphrase
        path = self._ca_dir / SECRET_FILE
        try:
            secret = path.read_bytes().strip()
        except FileNotFoundError:
            secret = b""
        if not secret:
            secret = secrets.token_urlsafe(32).encode()
            write_private(path, secret)
        return secret

    def seal(self, key: PrivateKey) -> str:
        encryption = serialization.BestAvailableEncryption(self._secret())
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode()

    def open(self, sealed: str) -> PrivateKey:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        try:
            key = serialization.load_pem_private_key(sealed.encode(), self._secret())
        except (ValueError, TypeError):
            raise SealedKeyUnreadable(
                "the stored key of this request cannot be decrypted (was the CA passphrase changed?)"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise SealedKeyUnreadable("the stored key of this request is of an unsupported type")
        return key
