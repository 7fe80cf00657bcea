"""Certificate revocation lists: built from the ``certificates`` table, signed by the issuing CA
(and by each retired issuing CA whose key is still at hand), published on the web listener
(``/crl/issuing.crl``, DER) and written to ``DATA_DIR/ca`` for the TLS layer:

- ``issuing.crl``: the current issuing CA's CRL, DER (what the web listener serves);
- ``crl.pem``: every CRL in PEM, loaded into the KES listener's TLS context (CRL check).

The CRL number is the signing time in milliseconds: it grows across replicas without shared
state (RFC 5280 only asks that it increase).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from mdm.config import Config
from mdm.core.errors import InvalidArgument
from mdm.pki.keys import PrivateKey, write_public

CRL_DER = "issuing.crl"
CRL_BUNDLE = "crl.pem"
CRL_PATH = "/crl/issuing.crl"

# RFC 5280 reason codes by their snake_case names. certificateHold/removeFromCRL are left out:
# revocation here is permanent.
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "ca_compromise": x509.ReasonFlags.ca_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aa_compromise": x509.ReasonFlags.aa_compromise,
}


def parse_reason(name: str) -> str:
    """``key_compromise``, ``keyCompromise`` or ``key-compromise`` -> ``key_compromise``."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name.strip()).replace("-", "_").lstrip("_")
    if snake not in REASONS:
        if snake in ("certificate_hold", "remove_from_crl"):
            raise InvalidArgument(f"reason {name}: not supported (revocation here is permanent)")
        raise InvalidArgument(f"reason {name!r}: unknown; RFC 5280 reasons are {', '.join(REASONS)}")
    return snake


def crl_url_for(config: Config, http_port: int | None = None) -> str | None:
    """The distribution point written into certificates: ``pki.crl_url``, else the web
    listener's plain-HTTP URL (CRLs are fetched over HTTP to avoid a TLS chicken-and-egg)."""
    if config.pki.crl_url:
        return config.pki.crl_url
    web = config.listeners.web
    port = http_port or (web.http_port if web.http_enabled else 0)
    host = f"[{config.hostname}]" if ":" in config.hostname else config.hostname
    if port:
        return f"http://{host}{'' if port == 80 else f':{port}'}{CRL_PATH}"
    if web.https_enabled and web.https_port:
        return f"https://{host}{'' if web.https_port == 443 else f':{web.https_port}'}{CRL_PATH}"
    return None


@dataclass(frozen=True)
class RevokedEntry:
    serial: str  # lower-case hex
    revoked_at: datetime
    reason: str | None
    not_after: datetime
    issuer: x509.Name | None = None  # known when the certificate's PEM was parsed


@dataclass(frozen=True)
class Signer:
    """A CA that signs a CRL: the current issuing CA or a retired one."""

    certificate: x509.Certificate
    key: PrivateKey


def build_crl(
    signer: Signer, entries: list[RevokedEntry], this_update: datetime, next_update: datetime, number: int
) -> x509.CertificateRevocationList:
    revoked = []
    for entry in entries:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry.serial, 16))
            .revocation_date(entry.revoked_at)
        )
        if entry.reason and entry.reason != "unspecified":
            item = item.add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
        revoked.append(item.build())
    # The list goes in at construction: adding entries one by one copies the list each time.
    builder = (
        x509.CertificateRevocationListBuilder(revoked_certificates=revoked)
        .issuer_name(signer.certificate.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()), critical=False
        )
    )
    return builder.sign(signer.key, hashes.SHA256())


@dataclass(frozen=True)
class PublishedCrl:
    der: bytes
    this_update: datetime
    next_update: datetime
    number: int
    count: int


def publish(
    ca_dir: Path,
    current: Signer,
    retired: list[Signer],
    entries: list[RevokedEntry],
    validity: timedelta,
    now: datetime | None = None,
) -> PublishedCrl:
    """Sign one CRL per CA and write ``issuing.crl`` and ``crl.pem``; returns the current CA's.

    Entries whose issuer is known go to that CA's CRL; entries of unknown issuer go to the
    current CA's (that is where every certificate is issued now)."""
    now = now or datetime.now(UTC)
    this_update = now.replace(microsecond=0)
    next_update = this_update + validity
    number = time.time_ns() // 1_000_000
    retired_names = {s.certificate.subject for s in retired}
    own = [e for e in entries if e.issuer is None or e.issuer not in retired_names]
    crl = build_crl(current, own, this_update, next_update, number)
    bundle = [crl.public_bytes(serialization.Encoding.PEM)]
    for signer in retired:
        mine = [e for e in entries if e.issuer == signer.certificate.subject]
        bundle.append(
            build_crl(signer, mine, this_update, next_update, number).public_bytes(serialization.Encoding.PEM)
        )
    der = crl.public_bytes(serialization.Encoding.DER)
    write_public(ca_dir / CRL_DER, der)
    write_public(ca_dir / CRL_BUNDLE, b"".join(bundle))
    return PublishedCrl(der, this_update, next_update, number, len(own))
