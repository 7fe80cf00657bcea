"""Server-certificate replacement from a PKCS#12 container (``mdm certs set``, the reference
product's ``klsetsrvcert``).

Checks, in order, each with its own message: the container (garbage, truncated, wrong password),
a private key and a certificate in it, key/certificate match, key strength (RSA >= 2048, EC
P-256/P-384), validity, serverAuth usage, the SAN covering ``hostname``, and the chain up to a
self-signed root (from the container, or ending at this service's own CA). Nothing is written
unless all pass; then both slot files are replaced (``slots.install_slot``).

Pin convention: a device that pins a server certificate stores the lower-case hex SHA-256 of
that certificate's DER in ``devices.attributes["server_pin"]`` (KES devices pin the ``M``
certificate). Replacement reports how many devices pinned the old certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.db.models import Severity
from mdm.pki import certcheck, pkcs12, store
from mdm.pki.certcheck import CertInputError, CertSummary
from mdm.pki.event_types import SERVER_CERT_REPLACED
from mdm.pki.keys import PrivateKey
from mdm.pki.slots import SLOTS, install_slot, load_slot_chain

PIN_ATTRIBUTE = "server_pin"
SOON = timedelta(days=30)


@dataclass
class Prepared:
    slot: str
    key: PrivateKey
    chain: list[x509.Certificate]
    new: CertSummary
    algorithms: list[str]
    warnings: list[str] = field(default_factory=list)


def prepare(
    data: bytes,
    password: str | None,
    slot: str,
    hostname: str,
    own_ca: list[x509.Certificate],
    now: datetime | None = None,
) -> Prepared:
    """Validate a container for ``slot``; CertInputError says what is wrong. Writes nothing."""
    if slot not in SLOTS:
        raise CertInputError("unknown_slot", f"unknown slot {slot!r} (slots: {', '.join(SLOTS)})")
    now = now or datetime.now(UTC)
    try:
        container = pkcs12.load(data, password)
    except pkcs12.ContainerError as exc:
        raise CertInputError(exc.code, exc.message) from None
    if container.key is None:
        raise CertInputError(
            "no_key", "the container holds no private key; export the certificate together with its key"
        )
    if container.cert is None:
        raise CertInputError("no_certificate", "the container holds no certificate")
    leaf, key = container.cert, container.key
    certcheck.check_key_matches(leaf, key)
    certcheck.check_key_strength(leaf.public_key(), "server key")
    certcheck.check_validity(leaf, now, "the certificate")
    certcheck.check_server_usage(leaf)
    certcheck.check_san(leaf, hostname)
    chain = certcheck.build_chain(leaf, container.additional, now, anchors=own_ca)
    warnings = []
    if leaf.not_valid_after_utc - now < SOON:
        warnings.append(f"the new certificate expires soon ({leaf.not_valid_after_utc:%Y-%m-%d})")
    if chain[-1] not in own_ca:
        warnings.append(
            f"the chain ends at {certcheck.name_of(chain[-1])}, not at this service's root: devices must "
            "already trust that root (public CA, or a root deployed by profile)"
        )
    return Prepared(slot, key, chain, CertSummary.of(leaf), container.algorithms, warnings)


def current(certs_dir: Path, slot: str) -> CertSummary | None:
    try:
        return CertSummary.of(load_slot_chain(certs_dir, slot)[0])
    except (OSError, ValueError, IndexError):
        return None


def write(certs_dir: Path, prepared: Prepared) -> None:
    install_slot(certs_dir, prepared.slot, prepared.key, prepared.chain)


async def count_pinned(session: AsyncSession, fingerprint: str) -> int:
    """Devices whose ``attributes["server_pin"]`` is this certificate's SHA-256 (see module doc)."""
    return await store.count_pinned(session, PIN_ATTRIBUTE, fingerprint)


async def record(
    session: AsyncSession, slot: str, old: CertSummary | None, new: CertSummary, pinned: int | None, by: str
) -> None:
    """Emit ``server_cert_replaced``; a replaced certificate this CA had issued is superseded (so
    it no longer draws expiry notices)."""
    if old is not None:
        await store.supersede_valid(session, old.serial)
    events.emit(
        session,
        SERVER_CERT_REPLACED,
        severity=Severity.WARNING if pinned else None,  # pinned devices must receive the new pin
        slot=slot,
        old=_summary(old),
        new=_summary(new),
        pinned_devices=pinned,
        by=by,
    )


def _summary(s: CertSummary | None) -> dict[str, str] | None:
    if s is None:
        return None
    return {
        "subject": s.subject,
        "issuer": s.issuer,
        "serial": s.serial,
        "not_after": s.not_after.isoformat(),
        "sha256": s.fingerprint,
    }
