"""A device identity (private key + certificate + chain) and the two ways a device proves it:
a TLS client certificate, or an ``Mdm-Signature`` header (detached CMS SignedData over the body)."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class Identity:
    key: PrivateKey
    certificate: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def common_name(self) -> str:
        attrs = self.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def cert_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [self.certificate, *self.chain])

    def sign(self, body: bytes) -> str:
        """The ``Mdm-Signature`` header value for ``body``: base64 of a detached CMS SignedData
        with signed attributes and the signer certificate, as iOS sends it."""
        der = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(body)
            .add_signer(self.certificate, self.key, hashes.SHA256())
            # Binary: sign the bytes as they are (without it OpenSSL converts LF to CRLF first).
            .sign(
                serialization.Encoding.DER,
                [
                    pkcs7.PKCS7Options.DetachedSignature,
                    pkcs7.PKCS7Options.NoCapabilities,
                    pkcs7.PKCS7Options.Binary,
                ],
            )
        )
        return base64.b64encode(der).decode("ascii")

    def load_into(self, context: ssl.SSLContext) -> None:
        """Present this identity as the TLS client certificate of ``context``.

        The ssl module only loads key material from files, so the PEMs go through a private
        temporary directory that is removed at once.
        """
        with tempfile.TemporaryDirectory(prefix="mdm-sim-") as tmp:
            os.chmod(tmp, 0o700)
            cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.key_pem())
            cert_path.write_bytes(self.cert_pem())
            context.load_cert_chain(cert_path, key_path)
