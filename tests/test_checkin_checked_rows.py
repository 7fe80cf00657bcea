"""``store_checkin.checked_rows``: what Authenticate checks, read in one statement (issue 12,
check-in storms): the device a fingerprint is bound to, the certificate's record, and the UDID's
device with its binding, which stay None unless both rows exist (Authenticate then reads the
device alone), and which enrollment issued the identity (its serial, or its SCEP challenge)."""

from __future__ import annotations

import hashlib

import httpx
from cryptography.hazmat.primitives.serialization import Encoding
from ios_support import Phone, device_id_of, new_phone
from test_enroll_attach_statement import enrollment_row, scep_request, user_row

from mdm.db.engine import Database
from mdm.enroll.attach import normalized_serial
from mdm.enroll.profiles import SCEP_PURPOSE
from mdm.ios import store_checkin
from mdm.pki import services as pki_services
from mdm.server.runtime import Server


def _fingerprint(phone: Phone) -> bytes:
    return hashlib.sha256(phone.cert.public_bytes(Encoding.DER)).digest()


async def _checked(db: Database, phone: Phone, udid: str) -> store_checkin.Checked:
    async with db.transaction() as session:
        return await store_checkin.checked_rows(
            session, _fingerprint(phone), phone.serial, udid, normalized_serial(phone.serial)
        )


async def test_nothing_known_reads_a_row_of_nothing(server: Server, db: Database) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    checked = await _checked(db, phone, phone.udid)
    assert (checked.bound, checked.device, checked.binding) == (None, None, None)
    # The identity was issued by our CA: its record, not yet any device's; by no enrollment.
    assert checked.record is not None and checked.record.device_id is None
    assert checked.enrollment == (None, None)


async def test_the_enrollment_of_the_identity_comes_with_the_rows(server: Server, db: Database) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    user_id = await user_row(db, "dora")
    serial = normalized_serial(phone.serial)
    enrollment_id = await enrollment_row(db, user_id, identity="pkcs12", serial=serial)
    enrollment, purpose = (await _checked(db, phone, phone.udid)).enrollment
    assert purpose is None
    assert enrollment is not None and (enrollment.id, enrollment.user_id) == (enrollment_id, user_id)
    assert enrollment.device_id is None and enrollment.mdm_profile_identifier.startswith("com.example.mdm.")
    # A SCEP identity: the purpose of its request's challenge (the enrollment is then read by id).
    other = await new_phone(db, pki_services.ca(server.ctx))
    await scep_request(db, normalized_serial(other.serial), f"{SCEP_PURPOSE}{enrollment_id}")
    assert (await _checked(db, other, other.udid)).enrollment == (None, f"{SCEP_PURPOSE}{enrollment_id}")


async def test_a_bound_device_comes_with_its_binding_and_record(
    ios: httpx.AsyncClient, server: Server, db: Database
) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    device_id = await device_id_of(db, phone.udid)
    checked = await _checked(db, phone, phone.udid)
    assert checked.bound == device_id
    assert checked.record is not None and checked.record.device_id == device_id
    assert checked.device is not None and checked.binding is not None
    device = checked.device
    assert (device.id, device.identifier, device.status) == (device_id, phone.udid, "ok")
    assert checked.device.cert_serial == phone.serial
    assert checked.binding.device_id == device_id
    assert checked.binding.cert_fingerprint == _fingerprint(phone)
    assert checked.binding.last_signed_at is not None

    # The same identity naming another UDID: bound elsewhere, no device of that UDID.
    elsewhere = await _checked(db, phone, phone.udid.replace("0", "1"))
    assert (elsewhere.bound, elsewhere.device, elsewhere.binding) == (device_id, None, None)


async def test_a_device_without_binding_is_left_to_the_device_read(
    ios: httpx.AsyncClient, server: Server, db: Database
) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    device_id = await device_id_of(db, phone.udid)
    assert (await phone.checkin(ios, {"MessageType": "CheckOut", "Topic": "t"})).status_code == 200
    checked = await _checked(db, phone, phone.udid)  # (check-out deleted the binding row)
    assert (checked.bound, checked.device, checked.binding) == (None, None, None)
    async with db.transaction() as session:
        device = await store_checkin.device_by_identifier(session, phone.udid)
    assert device is not None and (device.id, device.status) == (device_id, "unmanaged")
