"""Replayed check-ins inside the signature window change nothing: a TokenUpdate that repeats the
stored token, magic, UnlockToken and AwaitingConfiguration is a no-op (no row update, no event),
and a check-in signed earlier than the last accepted one for the device is refused (400
``replayed``, security event). Equal signing times pass (signingTime has one-second resolution);
a signature without a signing time is accepted as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from binding_support import checkin_at, device_of, events_of, rejections
from ios_support import Phone, sign, snapshot

from mdm.db.engine import Database


@pytest.fixture
def extra_config() -> str:
    return "[ios]\nlast_seen_flush_seconds = 300\n"  # no write-behind during "nothing changed" checks


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def test_a_repeated_token_update_changes_nothing(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    before = await snapshot(db, skip=())  # events included
    again = phone.token_update(UnlockToken=b"unlock-secret")
    assert (await phone.checkin(ios, again)).status_code == 200
    assert await snapshot(db, skip=()) == before
    # The same signed request sent twice (a replay inside the window): the second changes nothing.
    body, headers = phone.signed({"UDID": phone.udid, **phone.token_update(token=b"\x07" * 32)})
    assert (await ios.put("/mdm/checkin", content=body, headers=headers)).status_code == 200
    changed = await snapshot(db, skip=())
    assert changed != before and (await device_of(db, phone.udid)).push_token == (b"\x07" * 32).hex()
    assert (await ios.put("/mdm/checkin", content=body, headers=headers)).status_code == 200
    assert await snapshot(db, skip=()) == changed
    # A different UnlockToken or AwaitingConfiguration is a change.
    awaiting = phone.token_update(token=b"\x07" * 32, AwaitingConfiguration=True)
    assert (await phone.checkin(ios, awaiting)).status_code == 200
    assert len(await events_of(db, "push_token_updated")) == 3


async def test_an_older_signing_time_than_the_last_accepted_is_refused(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    now = _now()
    first = await checkin_at(ios, phone, phone.token_update(token=b"\x0a" * 32), now)
    assert first.status_code == 200, first.text
    before = await snapshot(db)
    for message in (phone.token_update(token=b"\x0b" * 32), phone.authenticate(OSVersion="1.0"),
                    {"MessageType": "CheckOut", "Topic": "t"}):
        older = await checkin_at(ios, phone, message, now - timedelta(seconds=30))
        assert older.status_code == 400, older.text
        assert older.json()["error"]["details"]["reason"] == "replayed"
        assert await snapshot(db) == before
    assert [e.body["reason"] for e in await rejections(db)] == ["replayed"] * 3
    device = await device_of(db, phone.udid)
    assert (device.push_token, device.status) == ((b"\x0a" * 32).hex(), "ok")
    # Equal passes (two messages signed within the same second), and so does newer.
    same = await checkin_at(ios, phone, phone.token_update(token=b"\x0c" * 32), now)
    assert same.status_code == 200, same.text
    newer = await checkin_at(ios, phone, phone.token_update(token=b"\x0d" * 32), now + timedelta(seconds=1))
    assert newer.status_code == 200, newer.text
    assert (await device_of(db, phone.udid)).push_token == (b"\x0d" * 32).hex()
    # ... after which the second before is too old.
    late = await checkin_at(ios, phone, phone.token_update(token=b"\x0e" * 32), now)
    assert late.status_code == 400 and late.json()["error"]["details"]["reason"] == "replayed"


async def test_a_signature_without_signing_time_is_accepted(
    ios: httpx.AsyncClient, phone: Phone, db: Database
) -> None:
    import plistlib

    later = _now() + timedelta(seconds=5)
    ahead = await checkin_at(ios, phone, phone.token_update(token=b"\x01" * 32), later)
    assert ahead.status_code == 200
    body = plistlib.dumps({"UDID": phone.udid, **phone.token_update(token=b"\x02" * 32)})
    headers = {"Mdm-Signature": sign(body, phone.cert, phone.key, attributes=False)}
    assert (await ios.put("/mdm/checkin", content=body, headers=headers)).status_code == 200
    assert (await device_of(db, phone.udid)).push_token == (b"\x02" * 32).hex()
