"""The transport to the core server, built from ``[reporting]`` at start-up (the worker's plugin
calls ``open_transport``), and the "core link" client certificate of the generic transport.

Configuration problems are refused at start-up with a ``ConfigError`` that names the key: a
missing url, file, account or password; a secret file (HMAC key, password, client key) readable
by others than its owner (it must be 0600 or stricter).

With ``transport = "generic"`` and no ``client_certificate_file``, a client certificate for the
service's host name is issued from the internal CA (through ``mdm.pki.issuance``: recorded and
reported like every certificate) into ``DATA_DIR/reporting/`` (key 0600), reused while valid and
replaced ``RENEW_BEFORE`` its end, at start-up or by the running transport.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from mdm.config import Config, ConfigError
from mdm.pki import issuance
from mdm.pki import services as pki_services
from mdm.pki.ca import CertificateAuthority, pem_chain
from mdm.pki.issuance import CertificateRequest
from mdm.pki.keys import PrivateKey, load_key, save_key, write_public
from mdm.pki.tables import CertType
from mdm.reporting.config import ReportingConfig
from mdm.reporting.seams import Transport
from mdm.reporting.transport_generic import ClientIdentity, GenericTransport, IdentityRenewer
from mdm.reporting.transport_ksc import KscTransport
from mdm.server.context import ServerContext

log = logging.getLogger("mdm.reporting")

IDENTITY_DIR = "reporting"
CERT_FILE = "core-link.pem"
KEY_FILE = "core-link.key"
VALIDITY_DAYS = 365
RENEW_BEFORE = timedelta(days=30)
# The internal CA's client-authentication certificates are of these types; "vpn" is the one
# meant for a machine's network link (no user, no device).
CORE_LINK_TYPE = CertType.VPN


async def open_transport(ctx: ServerContext) -> Transport | None:
    """The configured transport, or None for ``transport = "none"``."""
    section = ctx.config.section(ReportingConfig)
    if section.transport == "none":
        return None
    settings = await asyncio.to_thread(_settings, ctx.config, section)
    if section.transport == "generic":
        identity = settings.identity
        renew = None
        if identity is None:
            identity = await core_link_identity(ctx)
            renew = _renewer(ctx)
        log.info("reporting: generic transport to %s (client certificate %s, %s)", section.url,
                 identity.cert_file, "signed" if settings.secret else "unsigned")
        return GenericTransport(section.url, ca_file=settings.ca_file, identity=identity,
                                hmac_key=settings.secret, timeout=section.timeout_seconds,
                                renew_identity=renew)
    log.info("reporting: Open API transport to %s as %r", section.url, section.ksc_user)
    return KscTransport(section.url, user=section.ksc_user, password=(settings.secret or b"").decode(),
                        domain=section.ksc_domain, internal=section.ksc_internal, ca_file=settings.ca_file,
                        identity=settings.identity, timeout=section.timeout_seconds)


@dataclass(frozen=True)
class _Settings:
    ca_file: str
    identity: ClientIdentity | None
    secret: bytes | None  # the HMAC key (generic) or the password (ksc)


def _settings(config: Config, section: ReportingConfig) -> _Settings:
    """Every file the section names, checked (blocking: run in a thread at start-up)."""
    if not section.url:
        raise ConfigError(f"reporting.url: required with transport = {section.transport!r}")
    if not section.url.startswith("https://"):
        raise ConfigError(f"reporting.url: must be an https:// URL, not {section.url!r}")
    ca_file = str(_existing(config, "ca_file", section.ca_file)) if section.ca_file else ""
    identity = None
    if section.client_certificate_file or section.client_key_file:
        if not (section.client_certificate_file and section.client_key_file):
            raise ConfigError("reporting.client_certificate_file and reporting.client_key_file go together")
        cert = _existing(config, "client_certificate_file", section.client_certificate_file)
        key = _secret_file(config, "client_key_file", section.client_key_file)
        identity = ClientIdentity(str(cert), str(key))
    secret: bytes | None = None
    if section.transport == "generic" and section.hmac_key_file:
        secret = _secret_file(config, "hmac_key_file", section.hmac_key_file).read_bytes().strip()
        if len(secret) < 16:
            raise ConfigError("reporting.hmac_key_file: the key is shorter than 16 bytes")
    if section.transport == "ksc":
        if not section.ksc_user:
            raise ConfigError("reporting.ksc_user: required with transport = 'ksc'")
        if not section.ksc_password_file:
            raise ConfigError("reporting.ksc_password_file: required with transport = 'ksc'")
        secret = _secret_file(config, "ksc_password_file", section.ksc_password_file).read_bytes().strip()
        if not secret:
            raise ConfigError("reporting.ksc_password_file: the file is empty")
    return _Settings(ca_file, identity, secret)


def _existing(config: Config, key: str, value: str) -> Path:
    path = config.resolve(value)
    if not path.is_file():
        raise ConfigError(f"reporting.{key}: {path} does not exist or is not a file")
    return path


def _secret_file(config: Config, key: str, value: str) -> Path:
    path = _existing(config, key, value)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"reporting.{key}: {path} is mode {mode:04o}; a secret file must be 0600")
    return path


# ---- the core-link client certificate ----------------------------------------------------------


async def core_link_identity(ctx: ServerContext, *, force: bool = False) -> ClientIdentity:
    """The internal-CA client certificate in DATA_DIR/reporting/: reused while valid for the host
    name and more than ``RENEW_BEFORE`` from its end, otherwise issued anew."""
    ca = pki_services.ca(ctx)
    directory = ctx.config.data_path / IDENTITY_DIR
    host = ctx.config.hostname
    now = datetime.now(UTC)
    current, reusable = await asyncio.to_thread(_stored, directory, ca, host, now)
    if current is not None and reusable and not force:
        return _identity(directory, current)
    request = CertificateRequest(
        type=CORE_LINK_TYPE, common_name=host, sans=(host,), days=VALIDITY_DAYS,
        key_type=ctx.config.pki.key_type, rsa_bits=ctx.config.pki.rsa_bits,
        renews_serial=format(current.serial_number, "x") if current is not None else None,
    )
    async with ctx.db.transaction() as session:
        issued = await issuance.issue(session, pki_services.source(ctx), request)
        assert issued.key is not None  # generated: the request carries no public key
        await asyncio.to_thread(_write, directory, issued.key, [issued.certificate, *issued.chain])
    log.info("reporting: issued the core-link client certificate %s for %s (until %s)",
             issued.serial_hex, host, issued.certificate.not_valid_after_utc.isoformat())
    return _identity(directory, issued.certificate)


def _renewer(ctx: ServerContext) -> IdentityRenewer:
    async def renew() -> ClientIdentity:
        return await core_link_identity(ctx)

    return renew


def _identity(directory: Path, cert: x509.Certificate) -> ClientIdentity:
    return ClientIdentity(str(directory / CERT_FILE), str(directory / KEY_FILE),
                          renew_after=cert.not_valid_after_utc - RENEW_BEFORE)


def _stored(
    directory: Path, ca: CertificateAuthority, host: str, now: datetime
) -> tuple[x509.Certificate | None, bool]:
    """The stored certificate (None if missing, torn, not ours or not matching its key) and
    whether it can still be used as it is (for this host, 0600, not due for renewal)."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    try:
        cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
        key = load_key(key_path)
        mode = stat.S_IMODE(os.stat(key_path).st_mode)
    except Exception:  # missing, torn or foreign: issue anew
        return None, False
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    same_key = key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)
    try:
        cert.verify_directly_issued_by(ca.issuing)
        issued_here = True
    except (ValueError, TypeError, InvalidSignature):
        issued_here = False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for_host = host in names.get_values_for_type(x509.DNSName) or host in {
            str(ip) for ip in names.get_values_for_type(x509.IPAddress)
        }
    except x509.ExtensionNotFound:
        for_host = False
    if not (same_key and issued_here):
        return None, False
    fresh = cert.not_valid_after_utc - now > RENEW_BEFORE
    return cert, for_host and fresh and not mode & 0o077


def _write(directory: Path, key: PrivateKey, chain: list[x509.Certificate]) -> None:
    save_key(directory / KEY_FILE, key)  # 0600 from the start
    write_public(directory / CERT_FILE, pem_chain(chain))
