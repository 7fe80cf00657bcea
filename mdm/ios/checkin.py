"""Check-in messages (``PUT /mdm/checkin``): enrollment, push tokens, check-out, bootstrap token.

Every state change and its event happen in one transaction; identity problems raise
``IdentityError`` before anything is written. Authenticate is ``checkin_authenticate.py`` (it
cannot take a UDID from an active device's identity: ``takeover.py``). On PostgreSQL the device
channel's TokenUpdate runs without a transaction block: its state read, then one statement that
writes the change and its event only if the rows are still as read (``store_checkin_direct``);
otherwise the transactional path decides again.

Replays inside the signature window: a check-in signed earlier than the last accepted one that
changed something for the device (``ios_devices.last_signed_at``) is refused, and a TokenUpdate
that repeats what is stored changes nothing (no row update, no event). Equal signing times pass
(signingTime has one-second resolution); a signature without one is accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import commands, events, store_principals
from mdm.core.device_status import set_status
from mdm.core.errors import Gone, NotFound
from mdm.db.models import Device, DeviceStatus, utcnow
from mdm.db.prepared import autocommit, autocommits
from mdm.ios import store, store_checkin, store_checkin_direct, store_checkin_writes
from mdm.ios.checkin_authenticate import authenticate
from mdm.ios.checkin_authenticate_rules import not_replayed_since, same_owner
from mdm.ios.event_types import (
    BOOTSTRAP_TOKEN_CLEARED,
    BOOTSTRAP_TOKEN_ESCROW_READ,
    BOOTSTRAP_TOKEN_SET,
    DEVICE_UNENROLLED,
    PUSH_TOKEN_UPDATED,
)
from mdm.ios.identity import Identity, IdentityError
from mdm.ios.messages import CheckinMessage, dump_plist
from mdm.ios.service import IosService
from mdm.ios.tables import IosDevice

PLIST = "application/xml"
JSON = "application/json"


@dataclass(frozen=True)
class CheckinResult:
    body: bytes = b""
    content_type: str | None = None
    status: int = 200


async def handle(
    svc: IosService, identity: Identity, msg: CheckinMessage, *, owner: int | None = None
) -> CheckinResult:
    """``owner``: the user a publishing proxy authenticated (kcd): Authenticate binds a new device
    to that user; every message of an enrolled device needs its own user."""
    if msg.message_type == "Authenticate":
        await authenticate(svc, identity, msg, owner)
        return CheckinResult()
    if msg.message_type == "UserAuthenticate" and not svc.config.user_authenticate_enabled:
        raise Gone("UserAuthenticate is not enabled on this server (ios.user_authenticate_enabled)")
    check_out = msg.message_type == "CheckOut"
    binding = await svc.binding_of(identity, msg.identifier, check_out=check_out)
    if owner is not None:
        async with svc.db.session() as session:
            bound_user = await store_principals.device_owner(session, binding.device_id)
        same_owner(owner, bound_user if bound_user is not None else -1)
    svc.last_seen.touch(binding.device_id)
    if msg.message_type == "TokenUpdate" and not msg.user_id:
        if autocommits(svc.engine) and await _direct_token_update(svc, binding.device_id, identity, msg):
            return CheckinResult()
        async with svc.db.transaction(inline=True) as session:
            await _device_token_update(session, binding.device_id, identity, msg)
        return CheckinResult()
    handler = _HANDLERS[msg.message_type]
    async with svc.db.transaction(inline=True) as session:
        device = await store.device(session, binding.device_id, lock=True)
        ios = await store.ios_device(session, binding.device_id, lock=True)
        if device is None or ios is None:
            raise IdentityError("unbound", "the enrollment of this certificate no longer exists")
        _not_replayed(ios, identity)
        result = await handler(session, device, ios, msg)
        if not check_out and _changed(session):
            ios.last_signed_at = identity.signed_at or ios.last_signed_at
    if check_out:
        svc.bindings.drop(identity.fingerprint)
    return result


def _not_replayed(ios: IosDevice, identity: Identity) -> None:
    not_replayed_since(ios.last_signed_at, identity)


def _changed(session: AsyncSession) -> bool:
    return bool(session.new or session.deleted or any(session.is_modified(o) for o in session.dirty))


# ---- bound messages ---------------------------------------------------------------------------


async def _user_token_update(
    session: AsyncSession, device: Device, ios: IosDevice, msg: CheckinMessage
) -> CheckinResult:
    """A user channel's TokenUpdate (the device channel's is ``_device_token_update``)."""
    token = msg.values["Token"]
    magic = msg.values["PushMagic"]
    now = utcnow()
    if msg.user_id:
        attributes = dict(device.attributes or {})
        channels = dict(attributes.get("user_channels") or {})
        entry = {
            "short_name": msg.get("UserShortName"),
            "long_name": msg.get("UserLongName"),
            "push_token": token.hex(),
            "push_magic": magic,
        }
        stored = channels.get(msg.user_id[:255])
        if isinstance(stored, dict) and all(stored.get(k) == v for k, v in entry.items()):
            return CheckinResult()  # a repeat: nothing to record
        channels[msg.user_id[:255]] = {**entry, "updated_at": now.isoformat()}
        attributes["user_channels"] = channels
        device.attributes = attributes
        events.emit(
            session, PUSH_TOKEN_UPDATED, device_id=device.id, channel="user", user_id_apple=msg.user_id
        )
        return CheckinResult()
    raise AssertionError("the device channel's TokenUpdate is handled by _device_token_update")


async def _device_token_update(
    session: AsyncSession, device_id: int, identity: Identity, msg: CheckinMessage
) -> None:
    """The device channel's TokenUpdate (the storm's second message) in Core statements: the
    stored state in one locked read, then only what changed (a repeat or a replay writes nothing)."""
    state = await store_checkin.token_state(session, device_id)
    writes = _token_writes(state, device_id, identity, msg)
    if writes is not None:
        push, values, event = writes
        await store_checkin_writes.write_with_event(
            session, device_id, device=push, binding=values, event=event
        )


async def _direct_token_update(
    svc: IosService, device_id: int, identity: Identity, msg: CheckinMessage
) -> bool:
    """``_device_token_update`` on PostgreSQL without a transaction block
    (``store_checkin_direct``): False when the rows changed between the read and the write
    (nothing written: the caller takes the transactional path)."""
    async with autocommit(svc.engine) as conn:
        state = await store_checkin_direct.token_state(conn, device_id)
        writes = _token_writes(state, device_id, identity, msg)
        if writes is None or state is None:
            return True
        push, values, event = writes
        return await store_checkin_direct.write_if_unchanged(
            conn, device_id, state, device=push, binding=values, event=event
        )


Writes = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


def _token_writes(
    state: store_checkin.TokenState | None, device_id: int, identity: Identity, msg: CheckinMessage
) -> Writes | None:
    """What a TokenUpdate changes given the stored ``state``: the device's columns, the binding's
    and the event; None when it repeats what is stored. Raises when unbound or replayed."""
    if state is None:
        raise IdentityError("unbound", "the enrollment of this certificate no longer exists")
    not_replayed_since(state.last_signed_at, identity)
    token_hex, magic = msg.values["Token"].hex(), msg.values["PushMagic"][:255]
    unlock, awaiting = msg.get("UnlockToken"), msg.get("AwaitingConfiguration")
    changed = token_hex != state.push_token or magic != state.push_magic or not state.push_valid
    if not (
        changed
        or (unlock is not None and not _same_secret(state.unlock_token, unlock))
        or (awaiting is not None and bool(awaiting) != state.awaiting_configuration)
    ):
        return None
    now = utcnow()
    push: dict[str, Any] = {"push_token": token_hex, "push_magic": magic, "push_valid": True}
    if changed:
        push["push_changed_at"] = now
    values: dict[str, Any] = {"updated_at": now}
    if unlock is not None:
        values["unlock_token"] = unlock
    if awaiting is not None:
        values["awaiting_configuration"] = bool(awaiting)
    if identity.signed_at is not None:
        values["last_signed_at"] = identity.signed_at
    event = events.event_values(
        PUSH_TOKEN_UPDATED,
        device_id=device_id,
        channel="device",
        changed=changed,
        unlock_token=unlock is not None,
    )
    return push, values, event


def _same_secret(stored: bytes | None, given: bytes) -> bool:
    return stored is not None and hmac.compare_digest(bytes(stored), bytes(given))


async def _check_out(
    session: AsyncSession, device: Device, ios: IosDevice, msg: CheckinMessage
) -> CheckinResult:
    active = await store.active_commands(session, device.id)
    for command in active:
        await commands.complete(
            session, command, success=False, info="device checked out (MDM profile removed)"
        )
    set_status(session, device, DeviceStatus.UNMANAGED, "checked_out")
    device.push_valid = False
    device.push_changed_at = utcnow()
    await store.unbind(session, ios)
    events.emit(
        session,
        DEVICE_UNENROLLED,
        device_id=device.id,
        user_id=device.user_id,
        identifier=device.identifier,
        commands_failed=len(active),
    )
    return CheckinResult()


async def _set_bootstrap(
    session: AsyncSession, device: Device, ios: IosDevice, msg: CheckinMessage
) -> CheckinResult:
    token = msg.get("BootstrapToken")
    ios.bootstrap_token = token
    ios.bootstrap_token_at = utcnow() if token is not None else None
    ios.updated_at = utcnow()
    kind = BOOTSTRAP_TOKEN_SET if token is not None else BOOTSTRAP_TOKEN_CLEARED
    events.emit(session, kind, device_id=device.id)
    return CheckinResult()


async def _get_bootstrap(
    session: AsyncSession, device: Device, ios: IosDevice, msg: CheckinMessage
) -> CheckinResult:
    if ios.bootstrap_token is None:
        return CheckinResult()
    events.emit(session, BOOTSTRAP_TOKEN_ESCROW_READ, device_id=device.id)
    return CheckinResult(dump_plist({"BootstrapToken": bytes(ios.bootstrap_token)}), PLIST)


async def _user_authenticate(
    session: AsyncSession, device: Device, ios: IosDevice, msg: CheckinMessage
) -> CheckinResult:
    # Enabled: no digest authentication is demanded (an empty DigestChallenge says so).
    attributes = dict(device.attributes or {})
    users = dict(attributes.get("user_channels") or {})
    entry = dict(users.get(msg.user_id or "", {}))
    for key, name in (("UserShortName", "short_name"), ("UserLongName", "long_name")):
        if msg.get(key) is not None:
            entry[name] = msg.get(key)
    entry["authenticated_at"] = utcnow().isoformat()
    users[(msg.user_id or "")[:255]] = entry
    attributes["user_channels"] = users
    device.attributes = attributes
    if msg.get("DigestResponse") is None:
        return CheckinResult(dump_plist({"DigestChallenge": ""}), PLIST)
    return CheckinResult()


async def _declarative(
    session: AsyncSession, device: Device, ios: IosDevice, msg: CheckinMessage
) -> CheckinResult:
    # Declarative management is acknowledged with an empty declaration set; full DDM is later work.
    endpoint = str(msg.values["Endpoint"])
    body: dict[str, Any]
    token = hashlib.sha256(b"mdm-ddm-empty").hexdigest()
    if endpoint == "tokens":
        body = {"SyncTokens": {"DeclarationsToken": token, "Timestamp": "2024-01-01T00:00:00Z"}}
    elif endpoint == "declaration-items":
        body = {
            "Declarations": {"Activations": [], "Assets": [], "Configurations": [], "Management": []},
            "DeclarationsToken": token,
        }
    elif endpoint == "status":
        return CheckinResult()
    else:
        raise NotFound(f"no declaration at {endpoint[:128]!r}")
    return CheckinResult(json.dumps(body).encode(), JSON)


_HANDLERS = {
    "TokenUpdate": _user_token_update,
    "CheckOut": _check_out,
    "SetBootstrapToken": _set_bootstrap,
    "GetBootstrapToken": _get_bootstrap,
    "UserAuthenticate": _user_authenticate,
    "DeclarativeManagement": _declarative,
}
