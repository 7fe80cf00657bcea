"""The core link's state and light (both engines): down after consecutive failures with a
``core_link_down`` event and a red light that says why, up again with ``core_link_up``, yellow for
an old backlog, dead letters or a stale row, grey without a transport."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from reporting_support import Receiver, add_events, worker
from sqlalchemy import select

from mdm.core.metrics import REGISTRY
from mdm.core.status import Light
from mdm.db.engine import Database
from mdm.db.models import Event, utcnow
from mdm.reporting import store as link_store
from mdm.reporting.link import LinkMonitor
from mdm.reporting.seams import Outcome, SendResult
from mdm.reporting.status import CoreLinkSource


async def _events(db: Database, kind: str) -> list[Event]:
    async with db.session() as session:
        return list((await session.scalars(select(Event).where(Event.type == kind))).all())


async def _light(db: Database, transport: str = "generic") -> tuple[Light, str | None]:
    async with db.session() as session:
        status = await CoreLinkSource(transport).status(session)
    return status.light, status.reason


async def test_down_then_up_with_events_and_lights(db: Database, tmp_path: Path) -> None:
    await add_events(db, [("a", 1)])
    receiver = Receiver()
    tls = SendResult(Outcome.RETRY, "tls_error", "certificate verify failed")
    receiver.outages = [tls, tls, tls, tls]
    w = worker(db, receiver, tmp_path)
    assert (await _light(db))[0] is Light.YELLOW  # nobody reported yet
    await w.upkeep.publish()
    assert await _light(db) == (Light.GREEN, None)
    await w.step()
    await w.step()
    assert w.link.up and await _events(db, "core_link_down") == []
    await w.step()  # the third failure in a row: down
    assert not w.link.up
    [down] = await _events(db, "core_link_down")
    assert down.body["reason"] == "tls_error" and down.body["attempts"] == 3
    assert down.body["detail"] == "certificate verify failed" and down.severity == "functional_failure"
    light, reason = await _light(db)
    assert light is Light.RED
    assert reason is not None
    assert reason.startswith("core server refused TLS: certificate verify failed (since ")
    assert reason.endswith(", 3 attempts)")
    assert REGISTRY.get_sample_value("mdm_reporting_core_link_up") == 0
    await w.step()  # still failing: no second event, the row counts on
    await w.upkeep.publish()
    assert len(await _events(db, "core_link_down")) == 1
    assert (await _light(db))[1].endswith(", 4 attempts)")  # type: ignore[union-attr]
    await w.step()  # delivered: up
    [up] = await _events(db, "core_link_up")
    assert up.body["attempts"] == 4 and up.body["down_seconds"] >= 0 and up.body["transport"] == "fake"
    assert await _light(db) == (Light.GREEN, None)
    assert REGISTRY.get_sample_value("mdm_reporting_core_link_up") == 1


async def test_down_after_failing_long_enough(db: Database, tmp_path: Path) -> None:
    t0 = utcnow()
    link = LinkMonitor("x", t0, down_after_failures=100, down_after_seconds=60)
    assert link.on_failure("http_503", "", t0) is None
    went = link.on_failure("http_503", "", t0 + timedelta(seconds=61))
    assert went is not None and went.since == t0 and went.attempts == 2
    came = link.on_success(t0 + timedelta(seconds=90))
    assert came is not None and came.down_seconds == 90 and came.attempts == 2


async def test_yellow_for_an_old_backlog_dead_letters_or_a_stale_row_and_grey_without_transport(
    db: Database,
) -> None:
    now = utcnow()
    base = LinkMonitor("x", now).snapshot(now)
    cases = [
        (replace(base, oldest_undelivered_at=now - timedelta(minutes=7), backlog=12), "12 event(s) wait"),
        (replace(base, dead_letters=2), "2 event(s) dead-lettered"),
        (replace(base, updated_at=now - timedelta(minutes=5)), "no replica has delivered events since"),
    ]
    for row, expected in cases:
        async with db.transaction() as session:
            await link_store.write(session, row)
        light, reason = await _light(db)
        assert light is Light.YELLOW and reason is not None and expected in reason
    light, reason = await _light(db, "none")
    assert light is Light.GREY and reason is not None and "not configured" in reason
    async with db.transaction() as session:
        await link_store.write(session, replace(base, up=False, last_failure_reason="http_503",
                                                consecutive_failures=7))
    light, reason = await _light(db)
    assert light is Light.RED and reason is not None
    assert reason.startswith("core server answered HTTP 503 (since")


async def test_a_replica_taking_over_an_outage_reports_its_end(db: Database, tmp_path: Path) -> None:
    since = utcnow() - timedelta(minutes=3)
    down = replace(LinkMonitor("old", since).snapshot(since), up=False, since=since, consecutive_failures=9,
                   last_failure_reason="connect_error")
    async with db.transaction() as session:
        await link_store.write(session, down)
    await add_events(db, [("a", 1)])
    w = worker(db, Receiver(), tmp_path)
    async with db.session() as session:
        w.link.resume(await link_store.read(session))
    assert not w.link.up and w.link.failures == 9
    await w.step()
    [up] = await _events(db, "core_link_up")
    assert up.body["attempts"] == 9 and up.body["down_seconds"] >= 180
    assert await _events(db, "core_link_down") == []
