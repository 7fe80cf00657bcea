"""Check-in messages (``PUT /mdm/checkin``): enrollment, push tokens, check-out, bootstrap token.

Every state change and its event happen in one transaction; identity problems raise
``IdentityError`` before anything is written. Authenticate cannot take a UDID from an active
device's identity (``takeover.py``).

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
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import commands, events, store_principals
from mdm.core.device_status import set_status
from mdm.core.errors import Gone, NotFound
from mdm.db.models import Device, DeviceStatus, Protocol, utcnow
from mdm.enroll.attach import attach_device
from mdm.ios import store, store_checkin, takeover
from mdm.ios.event_types import (
    BOOTSTRAP_TOKEN_CLEARED,
    BOOTSTRAP_TOKEN_ESCROW_READ,
    BOOTSTRAP_TOKEN_SET,
    DEVICE_ENROLLED,
    DEVICE_REAUTHENTICATED,
    DEVICE_UNENROLLED,
    PUSH_TOKEN_UPDATED,
)
from mdm.ios.identity import Identity, IdentityError
from mdm.ios.inventory import apply_device_facts
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
        return await _authenticate_retrying(svc, identity, msg, owner)
    if msg.message_type == "UserAuthenticate" and not svc.config.user_authenticate_enabled:
        raise Gone("UserAuthenticate is not enabled on this server (ios.user_authenticate_enabled)")
    check_out = msg.message_type == "CheckOut"
    binding = await svc.binding_of(identity, msg.identifier, check_out=check_out)
    if owner is not None:
        async with svc.db.session() as session:
            bound_user = await store_principals.device_owner(session, binding.device_id)
        _same_owner(owner, bound_user if bound_user is not None else -1)
    svc.last_seen.touch(binding.device_id)
    if msg.message_type == "TokenUpdate" and not msg.user_id:
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
    _not_replayed_since(ios.last_signed_at, identity)


def _not_replayed_since(last: datetime | None, identity: Identity) -> None:
    signed_at = identity.signed_at
    if signed_at is not None and last is not None and signed_at < last:
        raise IdentityError(
            "replayed",
            f"Mdm-Signature signing time {signed_at.isoformat()} is older than this device's last "
            "accepted check-in",
            serial=identity.cert.serial_hex,
        )


def _changed(session: AsyncSession) -> bool:
    return bool(session.new or session.deleted or any(session.is_modified(o) for o in session.dirty))


# ---- Authenticate ----------------------------------------------------------------------------


async def _authenticate_retrying(
    svc: IosService, identity: Identity, msg: CheckinMessage, owner: int | None
) -> CheckinResult:
    try:
        return await _authenticate(svc, identity, msg, owner)
    except IntegrityError:
        # A concurrent Authenticate for the same UDID created the device first; this one updates it.
        return await _authenticate(svc, identity, msg, owner)


def _same_owner(owner: int | None, user_id: int | None) -> None:
    """A kcd Authenticate never moves a device (or certificate) of another user to this one."""
    if owner is not None and user_id is not None and user_id != owner:
        raise IdentityError(
            "other_user", "the device is bound to another user than the proxy's principal"
        )


async def _authenticate(
    svc: IosService, identity: Identity, msg: CheckinMessage, owner: int | None
) -> CheckinResult:
    cert = identity.cert
    fingerprint = identity.fingerprint
    old_fingerprint: bytes | None = None
    async with svc.db.transaction(inline=True) as session:
        device = await store_checkin.device_by_identifier(session, msg.identifier)
        bound_to = await store_checkin.device_bound_to(session, fingerprint)
        if bound_to is not None and (device is None or bound_to != device.id):
            raise IdentityError(
                "identity_in_use",
                "this certificate is already bound to another device",
                serial=cert.serial_hex,
            )
        record = await store_checkin.certificate_record(session, cert.serial_hex)
        if (
            record is not None
            and record.device_id is not None
            and (device is None or record.device_id != device.id)
        ):
            raise IdentityError(
                "issued_to_other_device",
                "this certificate was issued to another device",
                serial=cert.serial_hex,
            )
        ios = await store.ios_device(session, device.id, lock=True) if device is not None else None
        not_before = cert.not_before
        if (
            ios is not None
            and ios.cert_fingerprint != fingerprint
            and ios.cert_not_before is not None
            and not_before < ios.cert_not_before
        ):
            # A replayed Authenticate signed with an identity older than the bound one.
            raise IdentityError(
                "stale_identity", "an older certificate cannot replace the bound one", serial=cert.serial_hex
            )
        if device is not None:
            await takeover.check(session, device=device, ios=ios, identity=identity, record=record)
        if ios is not None and ios.cert_fingerprint == fingerprint:
            _not_replayed(ios, identity)
        _same_owner(owner, device.user_id if device is not None else None)
        _same_owner(owner, record.user_id if record is not None else None)
        enrolled = device is None or ios is None or device.status == DeviceStatus.UNMANAGED.value
        now = utcnow()
        fresh = device is None
        if device is None:
            # Built whole before its INSERT: one statement, no UPDATE after it.
            device = Device(
                protocol=Protocol.IOS.value,
                identifier=msg.identifier,
                status=DeviceStatus.OK.value,
                enrolled_at=now,
                inventory={},
                attributes={},
            )
        elif enrolled:
            device.enrolled_at = now
        apply_device_facts(device, msg.values)
        set_status(session, device, DeviceStatus.OK, "enrolled")
        device.cert_serial = cert.serial_hex
        device.cert_not_after = cert.not_after
        attributes = dict(device.attributes or {})
        attributes["topic"] = msg.get("Topic")
        if msg.get("EnrollmentID"):
            attributes["user_enrollment"] = True
        if record is not None and record.user_id is not None and device.user_id is None:
            device.user_id = record.user_id
        if owner is not None:
            device.user_id = owner  # (checked above: the device and certificate had no other)
        device.attributes = attributes
        # The enrollment this identity came from: owner and the MDM profile's identifier (the
        # target of a later Remove command). Its look-ups read no row changed here: they need not
        # flush what is pending (one UPDATE of the device at commit instead of two).
        with session.no_autoflush:
            if fresh:
                device = await store.add_device(session, device)
            enrollment = await attach_device(
                session, device_id=device.id, cert_serial=cert.serial_hex, user_id=device.user_id
            )
        if record is not None and record.device_id != device.id:
            await store_checkin.link_certificate(session, record.id, device.id)
        if enrollment is not None:
            attributes = dict(attributes)
            attributes["mdm_profile_identifier"] = enrollment.mdm_profile_identifier
            attributes["enrollment_id"] = enrollment.id
            device.attributes = attributes
            if device.user_id is None or enrollment.for_device_id == device.id:
                device.user_id = enrollment.user_id  # (re-enrolled by an administrator for this user)
        _same_owner(owner, device.user_id)  # an enrollment link of another user
        if ios is None:
            store.add_ios_device(
                session,
                IosDevice(
                    device_id=device.id,
                    cert_fingerprint=fingerprint,
                    cert_not_before=not_before,
                    topic=msg.get("Topic"),
                    awaiting_configuration=False,
                    bound_at=now,
                    updated_at=now,
                    last_signed_at=identity.signed_at,
                ),
            )
        else:
            old_fingerprint = ios.cert_fingerprint
            if old_fingerprint != fingerprint or identity.signed_at is not None:
                ios.last_signed_at = identity.signed_at  # a new identity starts its own sequence
            ios.cert_fingerprint = fingerprint
            ios.cert_not_before = not_before
            ios.topic = msg.get("Topic")
            ios.bound_at = ios.updated_at = now
        kind = DEVICE_ENROLLED if enrolled else DEVICE_REAUTHENTICATED
        events.emit(
            session,
            kind,
            device_id=device.id,
            user_id=device.user_id,
            identifier=device.identifier,
            serial_number=device.serial_number,
            model=device.model,
            os_version=device.os_version,
            cert_serial=cert.serial_hex,
            identity_source=identity.source,
        )
        device_id, identifier, status = device.id, device.identifier, device.status
        generation = svc.bindings.generation  # read before the commit
    # The new binding is known: cache it (the TokenUpdate that follows needs no look-up) unless
    # something dropped a binding meanwhile (this commit re-binding the device, a deletion or a
    # check-out that committed while this commit was awaited): then the next message reads it.
    unchanged = svc.bindings.generation == generation
    svc.bindings.drop(old_fingerprint)
    svc.bindings.drop(fingerprint)
    if unchanged:
        svc.bindings.put(fingerprint, device_id, identifier, status)
    svc.hint.invalidate(device_id)
    svc.last_seen.touch(device_id)
    return CheckinResult()


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
    if state is None:
        raise IdentityError("unbound", "the enrollment of this certificate no longer exists")
    _not_replayed_since(state.last_signed_at, identity)
    token_hex, magic = msg.values["Token"].hex(), msg.values["PushMagic"][:255]
    unlock, awaiting = msg.get("UnlockToken"), msg.get("AwaitingConfiguration")
    changed = token_hex != state.push_token or magic != state.push_magic or not state.push_valid
    if not (
        changed
        or (unlock is not None and not _same_secret(state.unlock_token, unlock))
        or (awaiting is not None and bool(awaiting) != state.awaiting_configuration)
    ):
        return
    now = utcnow()
    await store_checkin.write_push(session, device_id, token_hex, magic, now if changed else None)
    values: dict[str, Any] = {"updated_at": now}
    if unlock is not None:
        values["unlock_token"] = unlock
    if awaiting is not None:
        values["awaiting_configuration"] = bool(awaiting)
    if identity.signed_at is not None:
        values["last_signed_at"] = identity.signed_at
    await store_checkin.write_binding_fields(session, device_id, **values)
    events.emit(
        session,
        PUSH_TOKEN_UPDATED,
        device_id=device_id,
        channel="device",
        changed=changed,
        unlock_token=unlock is not None,
    )


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
