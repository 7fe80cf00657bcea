"""TLS contexts of every listener that terminates TLS itself (installed by ``mdm.pki.plugin`` at
start-up, before the runtime binds), with the PKI's policy:

- **reserve slots**: the admin listener serves ``C`` and the KES listener ``M``. When a reload
  (``mdm reload``, SIGHUP) finds the main slot's files missing, unreadable or not matching (a
  replacement caught between its two renames), the listener serves the reserve slot (``CR``,
  ``MR``) instead of dropping devices, and goes back to the main slot on the next reload once it
  is sound. An expired main certificate gives way to a valid reserve at start-up too; other
  problems with the main slot at start-up stop the server with a clear message.
- **client-certificate trust** (iOS, KES): the issuing CA certificates in ``client-trust.pem``
  are the anchors (partial-chain verification), so a sibling sub-CA of an imported CA is not
  trusted. Client certificates stay optional; expired or foreign ones fail verification.
- **expired client certificates** complete the handshake on both listeners (the handlers answer
  them: iOS 400, KES 403 ``certificate_expired``, with a security event).
- **KES CRL check**: with ``pki.kes_tls_crl_check`` (off by default) the KES handshake also
  refuses revoked client certificates (OpenSSL CRL check of the leaf against ``crl.pem``); the
  context is rebuilt when the CRL changes. Off, a revoked certificate is answered ``403
  certificate_revoked`` by the KES handlers, which devices and administrators can act on. The iOS
  listener never gets this: iOS identity problems must be answered by the iOS handler with HTTP
  400, not by a failed handshake.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from mdm.config import Config
from mdm.pki.castore import CLIENT_TRUST
from mdm.pki.crl import CRL_BUNDLE
from mdm.pki.slots import LISTENER_SLOT, slot_paths
from mdm.server.tls import ReloadableContext, TLSFilesError, build_server_context

log = logging.getLogger(__name__)

RESERVE = {"C": "CR", "M": "MR"}
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME; Python's ssl.VerifyFlags has no name for it.
X509_V_FLAG_NO_CHECK_TIME = 0x200000
CLIENT_CERT_LISTENERS = ("ios", "kes")


def _slot_context(config: Config, listener: str, slot: str) -> ssl.SSLContext:
    cert_file, key_file = slot_paths(config.certs_dir, slot)
    if slot in RESERVE or slot in RESERVE.values():
        _check_not_expired(cert_file, slot)
    client_ca: Path | None = None
    if listener in CLIENT_CERT_LISTENERS:
        client_ca = config.ca_dir / CLIENT_TRUST
        if not client_ca.exists():
            client_ca = config.ca_dir / "chain.pem"
    ctx = build_server_context(cert_file, key_file, client_ca_file=client_ca, slot=slot)
    if client_ca is not None:
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if listener in CLIENT_CERT_LISTENERS:
        # An expired (or not yet valid) device certificate completes the handshake, so that the
        # application's verifier, which checks the validity period on every request, answers it
        # with HTTP 400 and a security event; iOS devices unenroll on some failures, and a failed
        # handshake tells the administrator nothing. The chain must still lead to a trusted CA.
        # Likewise on KES: 403 certificate_expired and a security event (mdm.kes.identity).
        ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
    if listener == "kes" and config.pki.kes_tls_crl_check:
        crl_file = config.ca_dir / CRL_BUNDLE
        if crl_file.exists():
            ctx.load_verify_locations(cafile=str(crl_file))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        else:
            log.error("KES listener: %s is missing; only the handlers refuse revoked certificates", crl_file)
    return ctx


class SlotExpired(TLSFilesError):
    """The slot's certificate has expired (its files are otherwise fine)."""


def _check_not_expired(cert_file: Path, slot: str) -> None:
    try:
        cert = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    except FileNotFoundError:
        return  # build_server_context reports it
    except (OSError, ValueError, IndexError) as exc:
        raise TLSFilesError(f"slot {slot}: {cert_file} is not a readable PEM certificate ({exc})") from None
    if cert.not_valid_after_utc <= datetime.now(UTC):
        expired = f"{cert.not_valid_after_utc:%Y-%m-%d}"
        raise SlotExpired(f"slot {slot}: the certificate in {cert_file} expired on {expired}")


def build_listener_context(config: Config, listener: str, *, reloading: bool = True) -> ssl.SSLContext:
    slot = LISTENER_SLOT[listener]
    try:
        return _slot_context(config, listener, slot)
    except TLSFilesError as exc:
        reserve = RESERVE.get(slot)
        if reserve is None or not (reloading or isinstance(exc, SlotExpired)):
            raise
        try:
            ctx = _slot_context(config, listener, reserve)
        except TLSFilesError as reserve_exc:
            raise TLSFilesError(f"{exc}; the reserve slot is unusable too: {reserve_exc}") from None
        log.warning("%s listener: %s; serving the reserve slot %s meanwhile", listener, exc, reserve)
        return ctx


def install(config: Config, tls: dict[str, ReloadableContext]) -> None:
    """Create the PKI-aware contexts for the listeners that terminate TLS themselves."""
    listeners = config.listeners
    wanted = [name for name in ("ios", "kes", "admin") if getattr(listeners, name).enabled
              and getattr(listeners, name).mode == "tls"]
    if listeners.web.enabled and listeners.web.https_enabled:
        wanted.append("web")
    for name in wanted:
        if name not in tls:
            tls[name] = ReloadableContext(_builder(config, name))


def _builder(config: Config, listener: str) -> Callable[[], ssl.SSLContext]:
    built = False

    def build() -> ssl.SSLContext:
        nonlocal built
        ctx = build_listener_context(config, listener, reloading=built)
        built = True
        return ctx

    return build
