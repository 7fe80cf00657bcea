"""One chunk of what Exchange listed, compared with what the service knew and written back, with
an event for every change (in the caller's transaction). No SQL here: ``store*`` does it.

- policies: by name; settings or the default flag changed -> eas_policy_changed;
- mailboxes: by identity; ActiveSync switch or policy changed -> eas_mailbox_changed; one
  ``users`` row per owner;
- partnerships: by Exchange identity; a new one -> eas_device_discovered, a vanished one seen
  again -> eas_device_reappeared, model/OS/applied policy/access/wipe state changed ->
  eas_device_changed; a wipe newly acknowledged -> the device's status ``wiped``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.db.enums import DeviceStatus
from mdm.eas import event_types as ev
from mdm.eas import store, store_devices
from mdm.eas.records import DeviceStatistics, Mailbox, MailboxPolicy, WipeState


@dataclass(frozen=True, slots=True)
class KnownMailbox:
    """What the device pass needs of a mailbox (kept for the partnership mailboxes only)."""

    identity: str
    id: int
    user_id: int | None
    owner: str


@dataclass(frozen=True, slots=True)
class Found:
    """A device Exchange listed, with the mailbox it was listed for."""

    mailbox: KnownMailbox
    stats: DeviceStatistics


def split_os(os: str | None) -> tuple[str | None, str | None]:
    """ "iOS 17.1 21B74" -> ("iOS", "17.1 21B74"); "Android 14" -> ("Android", "14")."""
    if not os:
        return None, None
    name, _, version = os.strip().partition(" ")
    return name[:64] or None, version.strip()[:64] or None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# ---- policies -------------------------------------------------------------------------------
async def sync_policies(session: AsyncSession, found: Sequence[MailboxPolicy], now: datetime) -> None:
    known = await store.policies(session)
    for policy in found:
        settings = policy.settings.model_dump(mode="json")
        row = known.get(policy.name.lower())
        if row is None:
            store.add_policy(
                session,
                identity=policy.identity,
                name=policy.name,
                guid=policy.guid,
                is_default=policy.is_default,
                settings=settings,
                seen_at=now,
                updated_at=now,
            )
            events.emit(session, ev.EAS_POLICY_DISCOVERED, policy=policy.name, is_default=policy.is_default)
            continue
        changes: dict[str, list[Any]] = {
            k: [row.settings.get(k), v] for k, v in settings.items() if row.settings.get(k) != v
        }
        if row.is_default != policy.is_default:
            changes["is_default"] = [row.is_default, policy.is_default]
        if changes:
            row.settings, row.is_default, row.updated_at = settings, policy.is_default, now
            events.emit(
                session,
                ev.EAS_POLICY_UPDATED,
                policy=policy.name,
                is_default=policy.is_default,
                changes=changes,
            )
        row.identity, row.guid, row.seen_at, row.vanished_at = policy.identity, policy.guid, now, None


# ---- mailboxes ------------------------------------------------------------------------------
async def sync_mailboxes(
    session: AsyncSession, found: Sequence[Mailbox], now: datetime
) -> list[KnownMailbox]:
    """Write a chunk of mailboxes; returns those with a partnership (for the device pass)."""
    unique = {m.identity: m for m in found}
    owners = {m.owner: (m.primary_smtp, m.display_name) for m in unique.values()}
    users = await store.ensure_users(session, owners)
    known = await store.mailboxes_by_identity(session, list(unique))
    rows = []
    for m in unique.values():
        before = known.get(m.identity)
        if before is not None:
            changes: dict[str, list[Any]] = {}
            if before.activesync_enabled != m.activesync_enabled:
                changes["activesync_enabled"] = [before.activesync_enabled, m.activesync_enabled]
            if before.policy != m.policy:
                changes["policy"] = [before.policy, m.policy]
            if changes:
                events.emit(
                    session,
                    ev.EAS_MAILBOX_UPDATED,
                    user_id=users.get(m.owner),
                    mailbox=m.identity,
                    changes=changes,
                )
        rows.append(
            {
                "identity": m.identity,
                "guid": m.guid,
                "name": m.name[:255],
                "display_name": m.display_name,
                "primary_smtp": m.primary_smtp,
                "sam_account_name": m.sam_account_name,
                "user_id": users.get(m.owner),
                "activesync_enabled": m.activesync_enabled,
                "policy": m.policy,
                "has_partnership": m.has_partnership,
                "seen_at": now,
                "vanished_at": None,
                "updated_at": now,
            }
        )
    ids = await store.upsert_mailboxes(session, rows)
    return [
        KnownMailbox(m.identity, ids[m.identity], users.get(m.owner), m.owner)
        for m in unique.values()
        if m.has_partnership and m.identity in ids
    ]


# ---- devices --------------------------------------------------------------------------------
def _device_values(stats: DeviceStatistics) -> dict[str, Any]:
    os_name, os_version = split_os(stats.os)
    return {
        "name": (stats.friendly_name or None),
        "model": stats.model,
        "os_name": os_name,
        "os_version": os_version,
        "imei": stats.imei,
        "last_seen_at": stats.last_sync,
    }


async def sync_devices(session: AsyncSession, found: Sequence[Found], now: datetime) -> int:
    """Write the devices of a batch of mailboxes; returns how many partnerships were written."""
    unique = {f.stats.identity: f for f in found}
    if not unique:
        return 0
    first: dict[str, Found] = {}
    for f in unique.values():
        first.setdefault(f.stats.device_id, f)
    known_dev = await store_devices.devices_by_identifier(session, list(first))
    await store_devices.insert_devices(
        session,
        [
            {
                "identifier": ident,
                "user_id": f.mailbox.user_id,
                "status": DeviceStatus.OK.value,
                "enrolled_at": now,
                **_device_values(f.stats),
            }
            for ident, f in first.items()
            if ident not in known_dev
        ],
    )
    devices = await store_devices.devices_by_identifier(session, list(first))
    await store_devices.update_devices(
        session,
        [
            {
                "b_id": devices[ident].id,
                **_device_values(f.stats),
                "user_id": devices[ident].user_id or f.mailbox.user_id,
            }
            for ident, f in first.items()
            if ident in known_dev
        ],
    )
    known = await store_devices.partnerships_by_identity(session, list(unique))
    rows, wiped = [], []
    news: list[dict[str, Any]] = []  # the batch's events, written with one statement
    for f in unique.values():
        s, dev = f.stats, devices[f.stats.device_id]
        before, old_dev = known.get(s.identity), known_dev.get(s.device_id)
        common: dict[str, Any] = {
            "device_id": dev.id,
            "user_id": dev.user_id,
            "identifier": s.device_id,
            "partnership": s.identity,
        }
        if before is None:
            news.append(
                events.event_values(
                    ev.EAS_DEVICE_DISCOVERED,
                    **common,
                    mailbox=f.mailbox.identity,
                    model=s.model,
                    os=s.os,
                    owner=f.mailbox.owner,
                )
            )
        else:
            if before.vanished_at is not None:
                news.append(
                    events.event_values(
                        ev.EAS_DEVICE_REAPPEARED, **common, vanished_at=before.vanished_at.isoformat()
                    )
                )
            changes = _changes(before, old_dev, s)
            if changes:
                news.append(events.event_values(ev.EAS_DEVICE_CHANGED, **common, changes=changes))
        if s.wipe_state is WipeState.ACKNOWLEDGED and (before is None or before.wipe_state != s.wipe_state):
            wiped.append(dev.id)
        rows.append(
            {
                "exchange_identity": s.identity,
                "device_id": dev.id,
                "mailbox_id": f.mailbox.id,
                "device_type": s.device_type,
                "user_agent": s.user_agent,
                "first_sync": s.first_sync,
                "last_sync": s.last_sync,
                "last_sync_attempt": s.last_sync_attempt,
                "policy_applied": s.policy_applied,
                "policy_status": s.policy_status,
                "access_state": s.access_state,
                "status": s.status,
                "wipe_state": s.wipe_state.value,
                "wipe_requested_at": s.wipe_requested,
                "wipe_sent_at": s.wipe_sent,
                "wipe_acknowledged_at": s.wipe_acknowledged,
                "seen_at": now,
                "vanished_at": None,
                "updated_at": now,
            }
        )
    await store_devices.upsert_partnerships(session, rows)
    await store.insert_events(session, news)
    await store_devices.mark_wiped(session, wiped, "Exchange reports the wipe acknowledged by the device")
    return len(rows)


def _changes(before: Any, old_dev: Any, s: DeviceStatistics) -> dict[str, list[Any]]:
    changes: dict[str, list[Any]] = {}
    for key, old, new in (
        ("policy_applied", before.policy_applied, s.policy_applied),
        ("access_state", before.access_state, s.access_state),
        ("wipe_state", before.wipe_state, s.wipe_state.value),
    ):
        if old != new:
            changes[key] = [old, new]
    if old_dev is not None:
        os_name, os_version = split_os(s.os)
        if old_dev.model != s.model:
            changes["model"] = [old_dev.model, s.model]
        old_os = " ".join(x for x in (old_dev.os_name, old_dev.os_version) if x) or None
        new_os = " ".join(x for x in (os_name, os_version) if x) or None
        if old_os != new_os:
            changes["os"] = [old_os, new_os]
    return changes


def device_vanished_body(row: Any) -> dict[str, Any]:
    return {
        "identifier": row.identifier,
        "partnership": row.exchange_identity,
        "mailbox": row.mailbox,
        "last_sync": _iso(row.last_sync),
    }
