"""Traffic lights of enrollment and Android (docs/status.md), their conditions written for real
in the tables. Both engines."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta

from mdm.core.status import Light
from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.enroll.status import EnrollmentSource
from mdm.kes.status import AndroidSource
from mdm.kes.tables import KesDevice
from tests.push_dispatch_support import add_device, set_device
from tests.status_support import add_enrollment, add_user, light_of


async def test_enrollment_light_blue_until_a_device_then_green(db: Database) -> None:
    source = EnrollmentSource(lambda: False)
    blue = await light_of(db, source)
    assert blue.light is Light.LIGHT_BLUE and blue.reason == "no device has enrolled yet"
    await add_device(db, "first")
    assert (await light_of(db, source)).light is Light.GREEN


async def test_enrollment_red_while_link_mails_fail_when_mail_is_configured(db: Database) -> None:
    await add_device(db, "d")
    mail = {"configured": True}
    source = EnrollmentSource(lambda: mail["configured"], mail_grace=timedelta(seconds=60))
    user = await add_user(db)
    await add_enrollment(db, user, email="a@example.com", mailed=True, created_ago=timedelta(minutes=10))
    assert (await light_of(db, source)).light is Light.GREEN
    await add_enrollment(db, user, email="b@example.com", mailed=False, created_ago=timedelta(minutes=5))
    await add_enrollment(db, user, email=None, created_ago=timedelta(minutes=4))  # not mailed at all
    red = await light_of(db, source)
    assert red.light is Light.RED
    assert red.reason and "mail delivery of enrollment links is failing: 1 of the last 2" in red.reason
    # A mail still being sent (younger than the grace) does not count yet; a later success clears it.
    await add_enrollment(db, user, email="c@example.com", mailed=False, created_ago=timedelta(seconds=5))
    assert (await light_of(db, source)).light is Light.RED
    await add_enrollment(db, user, email="d@example.com", mailed=True, created_ago=timedelta(minutes=2))
    await add_enrollment(db, user, email="e@example.com", mailed=True, created_ago=timedelta(minutes=1))
    assert (await light_of(db, source)).light is Light.GREEN
    await add_enrollment(db, user, email="f@example.com", mailed=False, created_ago=timedelta(minutes=3))
    await add_enrollment(db, user, email="g@example.com", mailed=False, created_ago=timedelta(seconds=61))
    assert (await light_of(db, source)).light is Light.RED
    mail["configured"] = False  # without [smtp] host nothing is mailed: no judgement on mail
    assert (await light_of(db, source)).light is Light.GREEN


async def test_enrollment_yellow_when_many_links_expire_unused(db: Database) -> None:
    await add_device(db, "d")
    source = EnrollmentSource(lambda: False, expired_threshold=3)
    user = await add_user(db)
    for _ in range(3):
        await add_enrollment(db, user, status="downloaded", expires_in=timedelta(days=-1))
    for _ in range(2):
        await add_enrollment(db, user, status="expired", expires_in=timedelta(days=-1))
    await add_enrollment(db, user, status="expired", expires_in=timedelta(days=-30))  # long ago
    assert (await light_of(db, source)).light is Light.GREEN
    await add_enrollment(db, user, status="expired", expires_in=timedelta(hours=-2))
    assert (await light_of(db, source)).light is Light.YELLOW  # 3 expired, 3 used
    await add_enrollment(db, user, status="downloaded", expires_in=timedelta(days=2))
    assert (await light_of(db, source)).light is Light.GREEN  # more were used than expired
    await add_enrollment(db, user, status="expired", expires_in=timedelta(hours=-1))
    yellow = await light_of(db, source)
    assert yellow.light is Light.YELLOW
    assert yellow.reason == "4 enrollment links expired unused in the last 7 days (4 were used)"


async def _kes_device(db: Database, name: str, *, last_sync: timedelta | None, interval: int | None = None,
                      status: str = "ok") -> int:
    device = await add_device(db, name, protocol=Protocol.KES)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        session.add(KesDevice(device_id=device, cert_fingerprint=os.urandom(32), sync_interval=interval,
                              registered_at=now - timedelta(days=30), bound_at=now - timedelta(days=30),
                              last_sync_at=now - last_sync if last_sync is not None else None))
    if status != "ok":
        await set_device(db, device, status=status)
    return device


async def test_android_grey_red_yellow_green(db: Database) -> None:
    state = {"enabled": False, "bound": False, "fcm": False}
    source = AndroidSource(lambda: state["enabled"], lambda: state["bound"], lambda: state["fcm"],
                           lambda: 900, min_stale=2, stale_ratio=0.25, rng=random.Random(7))
    grey = await light_of(db, source)
    assert grey.light is Light.GREY and "kes listener is disabled" in (grey.reason or "")
    state["enabled"] = True
    red = await light_of(db, source)
    assert red.light is Light.RED and "not listening" in (red.reason or "")
    state["bound"] = True
    no_fcm = await light_of(db, source)
    assert no_fcm.light is Light.YELLOW and "FCM is not configured" in (no_fcm.reason or "")
    state["fcm"] = True
    assert (await light_of(db, source)).light is Light.GREEN

    for i in range(6):
        await _kes_device(db, f"fresh-{i}", last_sync=timedelta(minutes=10))
    await _kes_device(db, "stale-1", last_sync=timedelta(hours=1))  # > 3 x 900 s
    await _kes_device(db, "slow-interval", last_sync=timedelta(hours=1), interval=3600)  # < 3 x 1 h
    await _kes_device(db, "wiped", last_sync=timedelta(days=3), status="wiped")  # not managed
    one = await light_of(db, source)
    assert one.light is Light.GREEN and one.details["not_synced_for_3_intervals"] == 1
    assert one.details["sampled"] == 8
    await _kes_device(db, "never-synced", last_sync=None)  # bound 30 days ago, never synced
    two = await light_of(db, source)
    assert two.light is Light.GREEN  # 2 of 9: under a quarter
    await _kes_device(db, "stale-2", last_sync=timedelta(days=2))
    stale = await light_of(db, source)
    assert stale.light is Light.YELLOW
    assert stale.reason == ("3 of 10 sampled Android devices have not synced for longer than 3 x their "
                            "sync interval")
