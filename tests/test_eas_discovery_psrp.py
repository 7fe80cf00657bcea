"""Discovery end to end: ``ExchangeRunner`` -> WSMan/PSRP fake -> real MIT KDC (Kerberos
Negotiate), into the database: the same results as in-process; wrong credentials and a KDC that
is down fail the run cleanly (nothing marked vanished); hostile mailbox names arrive verbatim."""

from __future__ import annotations

import time

from eas_support import discover, event_bodies
from sqlalchemy import func, select

from mdm.db.engine import Database
from mdm.db.enums import Protocol
from mdm.db.models import Device
from mdm.eas.tables import EasPartnership
from tests.eas_psrp_support import EasWorld, eas_world_fixture  # noqa: F401  (fixtures)
from tests.kdc import kdc_fixture, krb5_ccache_fixture  # noqa: F401


async def _count(db: Database, what: object) -> int:
    async with db.session() as session:
        return int(await session.scalar(what) or 0)  # type: ignore[call-overload]


async def test_discovery_through_psrp(db: Database, eas_world: EasWorld) -> None:
    org = eas_world.org(mailboxes=12, devices=20)
    hostile = "x'; Remove-Mailbox -Identity * #"
    org.add_mailbox(hostile)
    org.add_device(hostile, "ApplHOSTILE01")
    runner = eas_world.runner(eas_world.fake(org), scope="forest")  # both domains
    result = await discover(db, runner, batch=4, concurrency=2)
    assert (result.outcome, result.mailboxes, result.devices) == ("ok", 13, 21), result
    eas = select(func.count()).select_from(Device).where(Device.protocol == Protocol.EAS.value)
    assert 0 < await _count(db, eas) <= 21
    assert await _count(db, select(func.count()).select_from(EasPartnership)) == 21
    sent = [c.params.get("Mailbox") for c in org.calls if c.name == "Get-MobileDeviceStatistics"]
    assert any(s and s.endswith(hostile) for s in sent), sent
    # Wrong credentials: the run fails, nothing vanishes.
    bad = eas_world.runner(eas_world.fake(org), auth="not-the-password")
    failed = await discover(db, bad)
    assert failed.outcome == "failed" and failed.reason == "auth_failed", failed
    assert "wrong password" in (failed.error or "")
    vanished = select(func.count()).select_from(EasPartnership).where(EasPartnership.vanished_at.is_not(None))
    assert await _count(db, vanished) == 0
    assert [e["reason"] for e in await event_bodies(db, "eas_discovery_failed")] == [failed.reason]


async def test_kdc_down_fails_the_run(db: Database, eas_world: EasWorld) -> None:
    org = eas_world.org(mailboxes=4, devices=4)
    runner = eas_world.runner(eas_world.fake(org), auth="password")
    eas_world.kdc.stop_kdc()
    result = await discover(db, runner)
    assert result.outcome == "failed" and result.error, result
    eas_world.kdc.start_kdc()



async def test_garbage_and_a_hung_server_fail_the_run_and_mark_nothing(
        db: Database, eas_world: EasWorld) -> None:
    """A server answering HTML instead of WSMan, then one that holds every answer past the
    budget: each run fails with its reason (and event); the partnerships Exchange no longer
    lists are NOT marked vanished by a run that could not read them."""
    org = eas_world.org(mailboxes=6, devices=8)
    babbling, hung = eas_world.fake(org), eas_world.fake(org)
    assert (await discover(db, eas_world.runner(babbling))).outcome == "ok"
    async with db.session() as session:
        identities = list(await session.scalars(select(EasPartnership.exchange_identity)))
    assert identities and all(org.drop_device(i) for i in identities)
    babbling.garbage_next(1000)  # an HTML page instead of WSMan, at every attempt
    result = await discover(db, eas_world.runner(babbling, retries=1))
    assert (result.outcome, result.reason) == ("failed", "bad_response"), result
    hung.delay_next(1000, seconds=10.0)
    started = time.monotonic()
    result = await discover(db, eas_world.runner(hung, retries=1), limit_seconds=2.0)
    assert (result.outcome, result.reason) == ("failed", "timeout"), result
    assert time.monotonic() - started < 6.0  # the budget and a second of grace, not 10 s
    failed = await event_bodies(db, "eas_discovery_failed")
    assert [f["reason"] for f in failed] == ["bad_response", "timeout"], failed
    vanished = select(func.count()).select_from(EasPartnership).where(EasPartnership.vanished_at.is_not(None))
    assert await _count(db, vanished) == 0
