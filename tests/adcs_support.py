"""Helpers of the AD CS connector tests: a configuration with an ``[adcs]`` table, Enrollment
Agent certificates, requests with a CSR."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tomlkit
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mdm.adcs.agent import CERTIFICATE_REQUEST_AGENT
from mdm.config import Config
from mdm.config_sections import load
from mdm.pki.issuance import CertificateRequest, build_csr
from mdm.pki.keys import PrivateKey
from mdm.pki.tables import CertType


def write_config(data_dir: Path, **adcs: Any) -> Config:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "mdm.toml").write_text(tomlkit.dumps({"adcs": adcs}))
    return load(data_dir, env={})


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def agent_cert(*, eku: bool = True, days: float = 365, key: PrivateKey | None = None,
               issuer: tuple[x509.Certificate, PrivateKey] | None = None,
               ) -> tuple[x509.Certificate, PrivateKey]:
    """A self-made Enrollment Agent certificate (self-signed unless ``issuer``)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mdm-ea")])
    start = now - timedelta(hours=1) if days > 0 else now - timedelta(days=30)
    builder = (
        x509.CertificateBuilder().subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage(
            [CERTIFICATE_REQUEST_AGENT] if eku else [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def user_request(user: str = "alice", template: str | None = "MdmUser",
                 key: PrivateKey | None = None) -> tuple[CertificateRequest, PrivateKey]:
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    request = CertificateRequest(type=CertType.MOBILE, common_name=user, uid=user, template=template)
    return CertificateRequest(type=CertType.MOBILE, common_name=user, uid=user, template=template,
                              csr=build_csr(key, request)), key
