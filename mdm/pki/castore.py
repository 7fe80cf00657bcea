"""The CA directory beyond the live CA: importing an issuing CA (``mdm certs import-ca``), the CAs
it retires, and the client-certificate trust bundle.

Layout of ``DATA_DIR/ca`` after an import:

- ``issuing.pem``/``issuing.key``: the imported CA (key encrypted if a passphrase is configured),
  ``chain.pem``: it, its intermediates and its root; ``root.pem``: that root first, followed by
  the previous roots (no ``root.key``). The server certificates are not reissued unless asked
  (``--reissue-server-certs``): they keep chaining to the previous root, so whatever trusts
  ``root.pem`` (the CLI, devices given this file) keeps trusting the listeners;
- ``retired/<UTC time>/``: the previous CA files, moved aside. Certificates they issued stay
  trusted for client authentication until they expire (devices keep working and get renewed by
  the new CA), and their CRL keeps being signed while their key is readable;
- ``client-trust.pem``: the issuing CA certificates (current and retired, unexpired) that
  listeners accept client certificates from. They are trust anchors on their own (partial-chain
  verification), so trusting an imported sub-CA never extends to its siblings under the same
  enterprise root.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mdm.pki import certcheck, pkcs12
from mdm.pki.ca import CHAIN, ISSUING_CERT, ISSUING_KEY, ROOT_CERT, ROOT_KEY, CertificateAuthority, pem_chain
from mdm.pki.certcheck import CertInputError
from mdm.pki.keys import KeyError_, PrivateKey, load_key, save_key, write_public
from mdm.pki.x509_errors import CERTIFICATE_ERRORS

log = logging.getLogger(__name__)

RETIRED = "retired"
CLIENT_TRUST = "client-trust.pem"
CA_FILES = (ROOT_CERT, ROOT_KEY, ISSUING_CERT, ISSUING_KEY, CHAIN)


@dataclass(frozen=True)
class RetiredCA:
    directory: Path
    issuing: x509.Certificate
    key: PrivateKey | None  # None when it cannot be read (then its CRL is not refreshed)


def load_retired(ca_dir: Path, passphrase: bytes | None) -> list[RetiredCA]:
    """Retired issuing CAs that are still within their validity (older ones are irrelevant)."""
    out: list[RetiredCA] = []
    base = ca_dir / RETIRED
    if not base.is_dir():
        return out
    now = datetime.now(UTC)
    for directory in sorted(p for p in base.iterdir() if p.is_dir()):
        try:
            issuing = x509.load_pem_x509_certificate((directory / ISSUING_CERT).read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("ignoring retired CA in %s: %s", directory, exc)
            continue
        if issuing.not_valid_after_utc <= now:
            continue
        key: PrivateKey | None = None
        try:
            key = load_key(directory / ISSUING_KEY, passphrase)
        except KeyError_ as exc:
            log.warning("retired CA %s: %s; its CRL will not be refreshed", directory.name, exc)
        out.append(RetiredCA(directory, issuing, key))
    return out


def client_anchors(ca: CertificateAuthority, retired: list[RetiredCA]) -> list[x509.Certificate]:
    return [ca.issuing, *(r.issuing for r in retired if r.issuing != ca.issuing)]


def write_client_trust(ca_dir: Path, anchors: list[x509.Certificate]) -> Path:
    path = ca_dir / CLIENT_TRUST
    data = pem_chain(anchors)
    if not path.exists() or path.read_bytes() != data:
        write_public(path, data)
    return path


# ---- import ------------------------------------------------------------------------------------
@dataclass
class CAMaterial:
    certificate: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate]  # certificate, intermediates..., self-signed root
    warnings: list[str]


Material = tuple[x509.Certificate, PrivateKey, list[x509.Certificate]]


def _load_certs(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except CERTIFICATE_ERRORS as exc:
        raise CertInputError("not_certificate", f"{what}: not a PEM or DER certificate ({exc})") from None


def _load_key(data: bytes, password: str | None, what: str) -> PrivateKey:
    secret = password.encode() if password else None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, secret)
        else:
            key = serialization.load_der_private_key(data, secret)
    except TypeError:
        raise CertInputError(
            "wrong_password", f"{what}: the key is encrypted; give its --password" if not secret
            else f"{what}: the key is not encrypted; leave out --password"
        ) from None
    except ValueError:
        hint = " or wrong --password" if secret else ""
        raise CertInputError("not_key", f"{what}: not a readable PEM/DER private key{hint}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertInputError("weak_key", f"{what}: {type(key).__name__} keys are not supported (RSA or EC)")
    return key


def material_from_files(
    cert_data: bytes, key_data: bytes, password: str | None, extra_chain: bytes | None = None
) -> Material:
    certs = _load_certs(cert_data, "--cert")
    pool = certs[1:] + (_load_certs(extra_chain, "--chain") if extra_chain else [])
    return certs[0], _load_key(key_data, password, "--key"), pool


def material_from_p12(data: bytes, password: str | None) -> Material:
    try:
        container = pkcs12.load(data, password)
    except pkcs12.ContainerError as exc:
        raise CertInputError(exc.code, exc.message) from None
    if container.key is None:
        raise CertInputError("no_key", "the container holds no private key; export the CA with its key")
    if container.cert is None:
        raise CertInputError("no_certificate", "the container holds no certificate")
    return container.cert, container.key, container.additional


def validate_ca(
    cert: x509.Certificate, key: PrivateKey, pool: list[x509.Certificate], now: datetime | None = None
) -> CAMaterial:
    """Everything an issuing CA must be; CertInputError otherwise."""
    now = now or datetime.now(UTC)
    certcheck.check_key_matches(cert, key)
    name = certcheck.name_of(cert)
    constraints = None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        pass
    if constraints is None or not constraints.ca:
        raise CertInputError("not_ca", f"{name} is not a CA certificate (basicConstraints cA is not true)")
    usage = certcheck.key_usage(cert)
    if usage is None or not usage.key_cert_sign:
        raise CertInputError("not_ca", f"{name} may not sign certificates (keyUsage lacks keyCertSign)")
    if not usage.crl_sign:
        raise CertInputError(
            "not_ca", f"{name} may not sign CRLs (keyUsage lacks cRLSign); the service publishes a CRL"
        )
    certcheck.check_key_strength(cert.public_key(), "CA key")
    certcheck.check_validity(cert, now, "CA certificate")
    chain = certcheck.build_chain(cert, pool, now)
    warnings = []
    remaining = cert.not_valid_after_utc - now
    if remaining < timedelta(days=365):
        warnings.append(
            f"the CA expires in {remaining.days} days ({cert.not_valid_after_utc:%Y-%m-%d}); "
            "certificates it issues cannot outlive it"
        )
    return CAMaterial(cert, key, chain, warnings)


def install(
    ca_dir: Path, material: CAMaterial, passphrase: bytes | None, now: datetime | None = None
) -> Path | None:
    """Make ``material`` the issuing CA; the previous CA files move to ``retired/<time>/``.

    The new files are staged in a sibling directory first, so a failure leaves the old CA intact.
    Returns the retired directory (None if there was no CA before)."""
    now = now or datetime.now(UTC)
    ca_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)
    staging = ca_dir / ".import"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    try:
        save_key(staging / ISSUING_KEY, material.key, passphrase)
        roots = [material.chain[-1], *_previous_roots(ca_dir / ROOT_CERT, now)]
        write_public(staging / ISSUING_CERT, pem_chain([material.certificate]))
        write_public(staging / ROOT_CERT, pem_chain(dict.fromkeys(roots)))
        write_public(staging / CHAIN, pem_chain(material.chain))
        retired_dir: Path | None = None
        existing = [f for f in CA_FILES if (ca_dir / f).exists()]
        if existing:
            retired_dir = ca_dir / RETIRED / now.strftime("%Y%m%dT%H%M%SZ")
            suffix = 0
            while retired_dir.exists():
                suffix += 1
                retired_dir = retired_dir.with_name(f"{now:%Y%m%dT%H%M%SZ}-{suffix}")
            retired_dir.mkdir(parents=True, mode=0o700)
            for f in existing:
                os.replace(ca_dir / f, retired_dir / f)
        for f in (ISSUING_KEY, ISSUING_CERT, ROOT_CERT, CHAIN):
            os.replace(staging / f, ca_dir / f)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return retired_dir


def _previous_roots(path: Path, now: datetime) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return []
    return [c for c in certs if c.not_valid_after_utc > now]
