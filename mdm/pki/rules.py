"""Issuance rules per certificate type (mobile, mail, vpn): validity, key type and size, renewal
window, source and enterprise template. Stored in ``certificate_rules`` (defaults inserted by the
migration; a missing row falls back to the same defaults)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.errors import InvalidArgument, NotFound
from mdm.db.models import utcnow
from mdm.pki import store_rules
from mdm.pki.event_types import CERT_RULE_CHANGED
from mdm.pki.issuance import CertificateRequest
from mdm.pki.sources import INTERNAL
from mdm.pki.tables import RULE_TYPES, CertType, IssuanceRuleRecord

MAX_VALIDITY_DAYS = 3650
RSA_SIZES = (2048, 3072, 4096, 8192)
EC_SIZES = (256,)


@dataclass(frozen=True)
class IssuanceRule:
    type: str
    validity_days: int = 365
    key_type: str = "rsa"
    key_size: int = 2048
    renewal_days: int = 30
    source: str = INTERNAL
    template: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_RULES = {t.value: IssuanceRule(type=t.value) for t in RULE_TYPES}
EDITABLE = ("validity_days", "key_type", "key_size", "renewal_days", "source", "template")


def rule_type(name: str) -> CertType:
    if name not in DEFAULT_RULES:
        raise NotFound(f"no certificate type {name!r} (known: {', '.join(DEFAULT_RULES)})")
    return CertType(name)


def _of(row: IssuanceRuleRecord) -> IssuanceRule:
    return IssuanceRule(
        type=row.type, validity_days=row.validity_days, key_type=row.key_type, key_size=row.key_size,
        renewal_days=row.renewal_days, source=row.source, template=row.template,
    )


async def get_rule(session: AsyncSession, type: str | CertType) -> IssuanceRule:
    name = rule_type(str(type)).value
    row = await store_rules.get(session, name)
    return _of(row) if row is not None else DEFAULT_RULES[name]


async def all_rules(session: AsyncSession) -> list[IssuanceRule]:
    rows = {r.type: _of(r) for r in await store_rules.all_rows(session)}
    return [rows.get(name, default) for name, default in DEFAULT_RULES.items()]


def validate(rule: IssuanceRule, sources: Collection[str]) -> None:
    """Raise InvalidArgument naming the field; every rule stored has passed this. ``sources``:
    the names of the certificate sources this process knows."""
    if not 1 <= rule.validity_days <= MAX_VALIDITY_DAYS:
        raise InvalidArgument(
            f"validity_days: must be between 1 and {MAX_VALIDITY_DAYS} (got {rule.validity_days})"
        )
    if rule.key_type == "rsa":
        if rule.key_size not in RSA_SIZES:
            raise InvalidArgument(
                f"key_size: RSA keys must be {', '.join(map(str, RSA_SIZES))} bits (got {rule.key_size})"
            )
    elif rule.key_type == "ec":
        if rule.key_size not in EC_SIZES:
            raise InvalidArgument(f"key_size: EC keys are P-256, key_size 256 (got {rule.key_size})")
    else:
        raise InvalidArgument(f"key_type: must be rsa or ec (got {rule.key_type!r})")
    if not 0 <= rule.renewal_days < rule.validity_days:
        raise InvalidArgument(
            f"renewal_days: must be between 0 (no automatic renewal) and validity_days - 1 "
            f"({rule.validity_days - 1}) (got {rule.renewal_days})"
        )
    if rule.source not in sources:
        known = ", ".join(sorted(sources))
        raise InvalidArgument(f"source: unknown certificate source {rule.source!r} (known: {known})")
    if rule.template is not None and (len(rule.template) > 255 or not rule.template.isprintable()):
        raise InvalidArgument("template: at most 255 printable characters")


async def set_rule(
    session: AsyncSession, type: str, changes: dict[str, Any], *, by: str, sources: Collection[str]
) -> IssuanceRule:
    """Apply ``changes`` (a subset of EDITABLE) to the type's rule; emits ``cert_rule_changed``.
    ``sources``: the certificate source names a rule may name."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise InvalidArgument(f"unknown rule fields: {', '.join(unknown)} (editable: {', '.join(EDITABLE)})")
    before = await get_rule(session, type)
    if changes.get("key_type") == "ec" and "key_size" not in changes:
        changes = {**changes, "key_size": 256}
    elif changes.get("key_type") == "rsa" and "key_size" not in changes and before.key_type != "rsa":
        changes = {**changes, "key_size": 2048}
    if changes.get("template") == "":
        changes = {**changes, "template": None}
    after = replace(before, **changes)
    validate(after, sources)
    row = await store_rules.get_or_add(session, after.type)
    for name in EDITABLE:
        setattr(row, name, getattr(after, name))
    row.updated_at = utcnow()
    row.updated_by = by
    changed = {
        k: [getattr(before, k), getattr(after, k)]
        for k in EDITABLE
        if getattr(before, k) != getattr(after, k)
    }
    if changed:
        events.emit(session, CERT_RULE_CHANGED, cert_type=after.type, changes=changed, by=by)
    return after


def request_for(
    rule: IssuanceRule,
    *,
    common_name: str,
    user_id: int | None = None,
    device_id: int | None = None,
    public_key: CertificatePublicKeyTypes | None = None,
    emails: tuple[str, ...] = (),
    sans: tuple[str, ...] = (),
    uid: str | None = None,
    renews_serial: str | None = None,
) -> CertificateRequest:
    """A CertificateRequest carrying the rule's validity, key policy and template."""
    return CertificateRequest(
        type=CertType(rule.type),
        common_name=common_name,
        days=rule.validity_days,
        user_id=user_id,
        device_id=device_id,
        public_key=public_key,
        emails=emails,
        sans=sans,
        key_type=rule.key_type,
        rsa_bits=rule.key_size if rule.key_type == "rsa" else 2048,
        template=rule.template,
        renews_serial=renews_serial,
        uid=uid,
    )
