"""Authenticate of a device checking in again, on PostgreSQL outside a transaction block: the
rows it checks read without a lock, then one statement that writes the device, its binding and
the event only if the device and binding rows are still as read (``store_checkin_direct``).

In a transaction this was BEGIN, the checked rows read under their locks, the writes (one
statement), COMMIT: four round trips, each a turn of the event loop here and a statement of the
database server, which shares the cores in a check-in storm. Here it is two.

Only the plain case is taken: the UDID's device is active (status ok) and bound to this very
identity, the certificate's record is this device's (or none), the issuing enrollment (if any) is
known from the read and already attached, the message is not a replay and the owner rules pass.
Then nothing but this device's own rows is written: no binding moves, no status changes, no
enrollment or certificate is linked. Anything else (a first enrollment, a new identity, a
takeover, a refusal, a SCEP enrollment read by its id) and a write that finds the rows changed (a
check-out, a deletion, a re-enrollment or another check-in committed in between) go to the
transactional path, which decides again under the rows' locks.
"""

from __future__ import annotations

from typing import Any

from mdm.db.models import Device, DeviceStatus, utcnow
from mdm.db.prepared import autocommit
from mdm.enroll.attach import normalized_serial
from mdm.ios import store_checkin, store_checkin_direct
from mdm.ios.checkin_authenticate_rules import (
    apply_enrollment,
    apply_message,
    authenticated_event,
    binding_changes,
)
from mdm.ios.identity import Identity, IdentityError
from mdm.ios.messages import CheckinMessage
from mdm.ios.service import IosService
from mdm.ios.store_checkin import Checked

Writes = tuple[Device, dict[str, Any], dict[str, Any], dict[str, Any]]


async def authenticated(svc: IosService, identity: Identity, msg: CheckinMessage, owner: int | None) -> bool:
    """Whether the Authenticate was done here (False: nothing written, the transactional path
    takes it)."""
    serial = identity.cert.serial_hex
    async with autocommit(svc.engine) as conn:
        read = await store_checkin_direct.checked_state(
            conn, identity.fingerprint, serial, msg.identifier, normalized_serial(serial)
        )
        writes = plain_writes(read, identity, msg, owner)
        if writes is None:
            return False
        device, device_changes, binding, event = writes
        generation = svc.bindings.generation  # read before the write
        if not await store_checkin_direct.authenticated_if_unchanged(
            conn, read, device=device_changes, binding=binding, event=event
        ):
            return False
    rebound(svc, identity.fingerprint, None, device, generation)
    return True


def plain_writes(read: Checked, identity: Identity, msg: CheckinMessage, owner: int | None) -> Writes | None:
    """The device (as written), its changed columns, the binding's and the event, when ``read``
    is the plain case (the module's docstring); None otherwise."""
    stored, ios, record = read.device, read.binding, read.record
    if stored is None or ios is None or read.bound != stored.id:
        return None
    if ios.cert_fingerprint != identity.fingerprint or stored.status != DeviceStatus.OK.value:
        return None
    if record is not None and record.device_id != stored.id:
        return None
    signed_at, last = identity.signed_at, ios.last_signed_at
    if signed_at is not None and last is not None and signed_at < last:
        return None  # a replay: refused by the transactional path
    users = (stored.user_id, None if record is None else record.user_id)
    if owner is not None and any(u is not None and u != owner for u in users):
        return None  # (refused by the transactional path)
    enrollment, purpose = read.enrollment
    if enrollment is None and purpose is not None:
        return None  # (a SCEP identity's enrollment is read by its id)
    before = store_checkin.device_values(stored)
    device = Device(**before)  # (``stored`` guards the write: left as read)
    attributes = apply_message(device, identity, msg, record, owner)
    if enrollment is None and device.user_id is not None:
        return None  # (the user's latest unbound SCEP enrollment is read, and may be attached)
    if enrollment is not None and enrollment.device_id is None:
        return None  # (the enrollment is attached to the device)
    try:
        apply_enrollment(device, attributes, enrollment, owner)
    except IdentityError:
        return None
    after = store_checkin.device_values(device)
    device_changes = {c: v for c, v in after.items() if before[c] != v}
    binding = binding_changes(ios, identity, msg, utcnow())
    return device, device_changes, binding, authenticated_event(device, False, identity)


def rebound(
    svc: IosService, fingerprint: bytes, old_fingerprint: bytes | None, device: Device, generation: int
) -> None:
    """After an Authenticate committed: cache the new binding (the TokenUpdate that follows needs
    no look-up) unless something dropped this identity's or this device's binding since
    ``generation`` was read (a re-binding of the device, a deletion or a check-out that committed
    meanwhile): then the next message reads it."""
    unchanged = not svc.bindings.dropped_since(generation, fingerprint, device.id)
    svc.bindings.drop(old_fingerprint)
    svc.bindings.drop(fingerprint)
    if unchanged:
        svc.bindings.put(fingerprint, device.id, device.identifier, device.status)
    svc.hint.invalidate(device.id)
    svc.last_seen.touch(device.id)
