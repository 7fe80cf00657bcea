"""Expiry warnings of the APNs push certificate: 30, 7 and 1 days before, then the expired alert,
each once per certificate, across restarts; the real (expired) Apple certificate."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.devfakes.certs import make_ca, push_certificate
from mdm.push.config import apns_config, push_config
from mdm.push.expiry import EXPIRED, check, expiry_pass
from mdm.server.context import ServerContext

FIXTURE = Path(__file__).parent / "fixtures" / "apple" / "nanomdm" / "push.pem"
REAL_TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"


@dataclass(frozen=True)
class Cert:
    topic: str
    not_after: datetime


END = datetime(2030, 6, 1, tzinfo=UTC)
CERT = Cert("com.apple.mgmt.External.x", END)


def at(days_left: float) -> datetime:
    return END - timedelta(days=days_left)


def test_each_threshold_once_then_the_expired_alert() -> None:
    warned: set[int] = set()
    assert check(CERT, at(45), warned) == []
    (w,) = check(CERT, at(29.5), warned)
    assert (w.threshold, w.days_left, w.expired) == (30, 29, False)
    assert "SAME topic" in w.message and "set-cert" in w.message
    assert check(CERT, at(29), warned) == [] and check(CERT, at(8), warned) == []
    assert [x.threshold for x in check(CERT, at(6.9), warned)] == [7]
    assert check(CERT, at(2), warned) == []
    assert [x.threshold for x in check(CERT, at(0.5), warned)] == [1]
    assert check(CERT, at(0.1), warned) == []
    (alert,) = check(CERT, at(-0.01), warned)
    assert alert.expired and alert.threshold == EXPIRED and "EXPIRED on 2030-06-01" in alert.message
    assert check(CERT, at(-3), warned) == []


def test_a_late_start_warns_for_the_tightest_threshold_only() -> None:
    warned: set[int] = set()
    assert [x.threshold for x in check(CERT, at(5), warned)] == [7]  # not 30 as well
    assert warned == {30, 7}
    assert [x.threshold for x in check(CERT, at(0.9), warned)] == [1]
    assert [x.threshold for x in check(CERT, at(1), set(), days=[14, 3])] == [3]  # configurable


async def events_of(db: Database, type_: str) -> list[Event]:
    async with db.session() as session:
        return list((await session.scalars(select(Event).where(Event.type == type_))).all())


async def test_thresholds_survive_a_restart(
    config: Config, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca("test push CA")
    item = push_certificate(ca, days=29.5)
    path = config.data_path / "apns-push.pem"
    path.write_bytes(item.cert_pem + item.key_pem)
    apns_config(config).certificate_file = str(path)
    not_after = item.cert.not_valid_after_utc

    caplog.set_level(logging.WARNING, "mdm.push")
    (w,) = await expiry_pass(ServerContext(config=config, db=db))
    assert w.threshold == 30
    assert [r.levelname for r in caplog.records if "expires on" in r.getMessage()] == ["WARNING"]
    # a restart: a new context on the same data directory repeats nothing
    assert await expiry_pass(ServerContext(config=config, db=db)) == []
    assert [x.threshold for x in await expiry_pass(ServerContext(config=config, db=db),
                                                   not_after - timedelta(days=6))] == [7]
    assert await expiry_pass(ServerContext(config=config, db=db), not_after - timedelta(days=5)) == []
    events = await events_of(db, "push_certificate_expiring")
    assert [e.body["days_left"] for e in events] == [29, 6]
    assert {e.body["topic"] for e in events} == {w.topic} and events[0].severity == "warning"

    # a renewed certificate (same topic, later expiry) starts afresh
    renewed = push_certificate(ca, w.topic, days=20)
    path.write_bytes(renewed.cert_pem + renewed.key_pem)
    assert [x.threshold for x in await expiry_pass(ServerContext(config=config, db=db))] == [30]


async def test_real_apple_certificate_raises_the_expired_alert(
    config: Config, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(FIXTURE, config.data_path / "push.pem")  # Apple's certificate, without its key
    apns_config(config).certificate_file = "push.pem"  # relative: under the data directory
    caplog.set_level(logging.WARNING, "mdm.push")
    (alert,) = await expiry_pass(ServerContext(config=config, db=db))
    assert alert.expired and alert.topic == REAL_TOPIC
    assert alert.not_after == datetime(2022, 2, 10, 17, 44, 47, tzinfo=UTC)
    (record,) = [r for r in caplog.records if "EXPIRED" in r.getMessage()]
    assert record.levelname == "ERROR" and REAL_TOPIC in record.getMessage()
    (event,) = await events_of(db, "push_certificate_expired")
    assert event.severity == "critical" and event.body == {"topic": REAL_TOPIC,
                                                           "not_after": "2022-02-10T17:44:47+00:00"}
    assert await expiry_pass(ServerContext(config=config, db=db)) == []  # once
    assert (config.data_path / "run" / "push-expiry.json").exists()


async def test_nothing_configured_or_development_identity_is_quiet(config: Config, db: Database) -> None:
    from mdm.push.topic import create_development_identity

    apns_config(config).certificate_file = ""
    assert await expiry_pass(ServerContext(config=config, db=db)) == []
    apns_config(config).certificate_file, _ = create_development_identity(config.data_path, days=3)
    assert push_config(config).expiry_warning_days == [30, 7, 1]
    assert await expiry_pass(ServerContext(config=config, db=db)) == []
