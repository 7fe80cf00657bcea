"""What an Authenticate checks and changes, apart from where the rows come from: the transactional
path (``checkin_authenticate``, which reads them locked) and PostgreSQL's single statement for a
device checking in again (``checkin_authenticate_direct``, which reads them unlocked and writes
only if they are still as read) apply the same rules, so that either gives the same rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mdm.core import events
from mdm.db.models import Device, DeviceStatus
from mdm.enroll.store import Attached
from mdm.ios.event_types import DEVICE_ENROLLED, DEVICE_REAUTHENTICATED
from mdm.ios.identity import Identity, IdentityError
from mdm.ios.inventory import apply_device_facts
from mdm.ios.messages import CheckinMessage
from mdm.ios.store_checkin import CertificateRecord
from mdm.ios.tables import IosDevice


def same_owner(owner: int | None, user_id: int | None) -> None:
    """A kcd Authenticate never moves a device (or certificate) of another user to this one."""
    if owner is not None and user_id is not None and user_id != owner:
        raise IdentityError(
            "other_user", "the device is bound to another user than the proxy's principal"
        )


def not_replayed_since(last: datetime | None, identity: Identity) -> None:
    signed_at = identity.signed_at
    if signed_at is not None and last is not None and signed_at < last:
        raise IdentityError(
            "replayed",
            f"Mdm-Signature signing time {signed_at.isoformat()} is older than this device's last "
            "accepted check-in",
            serial=identity.cert.serial_hex,
        )


def apply_message(
    device: Device,
    identity: Identity,
    msg: CheckinMessage,
    record: CertificateRecord | None,
    owner: int | None,
) -> dict[str, Any]:
    """The message's facts, the identity's certificate and the owner on ``device`` (status ok);
    the attributes it now holds (a copy the caller may extend with the enrollment's)."""
    cert = identity.cert
    apply_device_facts(device, msg.values)
    device.status = DeviceStatus.OK.value
    device.cert_serial = cert.serial_hex
    device.cert_not_after = cert.not_after
    attributes = dict(device.attributes or {})
    attributes["topic"] = msg.get("Topic")
    if msg.get("EnrollmentID"):
        attributes["user_enrollment"] = True
    if record is not None and record.user_id is not None and device.user_id is None:
        device.user_id = record.user_id
    if owner is not None:
        device.user_id = owner  # (checked before: the device and certificate had no other)
    device.attributes = attributes
    return attributes


def apply_enrollment(
    device: Device, attributes: dict[str, Any], enrollment: Attached | None, owner: int | None
) -> None:
    """The enrollment this identity came from on ``device``: the owner and the MDM profile's
    identifier (the target of a later Remove command)."""
    if enrollment is not None:
        attributes = dict(attributes)
        attributes["mdm_profile_identifier"] = enrollment.mdm_profile_identifier
        attributes["enrollment_id"] = enrollment.id
        device.attributes = attributes
        if device.user_id is None or enrollment.for_device_id == device.id:
            device.user_id = enrollment.user_id  # (re-enrolled by an administrator for this user)
    same_owner(owner, device.user_id)  # an enrollment link of another user


def binding_changes(ios: IosDevice, identity: Identity, msg: CheckinMessage, now: datetime) -> dict[str, Any]:
    """The columns of an existing binding that Authenticate writes."""
    changes = {
        "cert_fingerprint": identity.fingerprint,
        "cert_not_before": identity.cert.not_before,
        "topic": msg.get("Topic"),
        "bound_at": now,
        "updated_at": now,
    }
    if ios.cert_fingerprint != identity.fingerprint or identity.signed_at is not None:
        changes["last_signed_at"] = identity.signed_at  # a new identity starts its own sequence
    return changes


def authenticated_event(device: Device, enrolled: bool, identity: Identity) -> dict[str, Any]:
    return events.event_values(
        DEVICE_ENROLLED if enrolled else DEVICE_REAUTHENTICATED,
        device_id=device.id,
        user_id=device.user_id,
        identifier=device.identifier,
        serial_number=device.serial_number,
        model=device.model,
        os_version=device.os_version,
        cert_serial=identity.cert.serial_hex,
        identity_source=identity.source,
    )
