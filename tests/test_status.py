"""Traffic lights (docs/status.md): the report over the registered sources (a failing or slow
source greys its own area, an area without a source is grey, overall is the worst, the document is
cached), and each light's transitions with the condition set up for real in the database, the CA
and the push dispatcher. Both engines."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.api.service_status import NOT_CONFIGURED, StatusReport
from mdm.config import Config
from mdm.core.status import AREAS, AreaStatus, Light
from mdm.core.status_commands import CommandBacklogSource
from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.pki.ca import CertificateAuthority
from mdm.pki.slots import issue_server_certificate
from mdm.pki.status import CertificatesSource
from mdm.pki.tables import IssuedCertificateRecord
from mdm.push.config import push_config
from mdm.push.dispatcher import PushDispatcher
from mdm.push.identity import certificate_status
from mdm.push.status import PushSource
from mdm.push.tables import PushWakeup
from mdm.push.types import ApnsIdentity, Outcome, PushResult
from tests.push_dispatch_support import ScriptedTransport, add_device, queue_command
from tests.status_support import age_queue, light_of, registry


class Fixed:
    def __init__(self, area: str, light: Light, reason: str | None = None) -> None:
        self.area, self.light, self.reason = area, light, reason
        self.calls = 0

    async def status(self, session: AsyncSession) -> AreaStatus:
        self.calls += 1
        return AreaStatus(self.area, self.light, self.reason)


class Failing:
    area = "push"

    async def status(self, session: AsyncSession) -> AreaStatus:
        raise RuntimeError("the gateway table is gone")


class Slow:
    area = "certificates"

    async def status(self, session: AsyncSession) -> AreaStatus:
        await asyncio.sleep(30)
        raise AssertionError("not reached")


# ---- the report -------------------------------------------------------------------------------
async def test_failing_slow_and_missing_sources_are_grey_and_overall_is_the_worst(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    report = StatusReport(db, registry(
        Fixed("enrollment", Light.YELLOW, "links expire"), Failing(), Slow(),
        Fixed("command_backlog", Light.GREEN), Fixed("android", Light.LIGHT_BLUE, "no device"),
    ), timeout=0.5)
    started = asyncio.get_running_loop().time()
    doc = await report.compute()
    assert asyncio.get_running_loop().time() - started < 5  # the slow source did not hold the others
    by_area = {a.area: a for a in doc.areas}
    assert [a.area for a in doc.areas] == list(AREAS)
    assert by_area["push"].light is Light.GREY
    assert by_area["push"].reason == "could not be computed: RuntimeError: the gateway table is gone"
    assert by_area["certificates"].light is Light.GREY
    assert by_area["certificates"].reason.startswith("could not be computed: no answer within 0.5 s")
    assert by_area["eas"] == AreaStatus("eas", Light.GREY, NOT_CONFIGURED)
    assert doc.overall is Light.YELLOW
    assert "the push light could not be computed" in caplog.text
    assert "the certificates light could not be computed" in caplog.text

    red = StatusReport(db, registry(Fixed("enrollment", Light.YELLOW, "x"), Fixed("android", Light.RED, "y")))
    assert (await red.compute()).overall is Light.RED
    blue = StatusReport(db, registry(Fixed("android", Light.LIGHT_BLUE, "y"), Fixed("push", Light.GREEN)))
    assert (await blue.compute()).overall is Light.LIGHT_BLUE
    assert (await StatusReport(db, registry()).compute()).overall is Light.GREY


async def test_the_document_is_kept_for_its_ttl_and_shared_by_concurrent_callers(db: Database) -> None:
    now = [100.0]
    source = Fixed("push", Light.GREEN)
    report = StatusReport(db, registry(source), ttl=2.0, monotonic=lambda: now[0])
    first, second, third = await asyncio.gather(report.document(), report.document(), report.document())
    assert first is second is third and source.calls == 1
    now[0] += 1.5
    assert await report.document() is first and source.calls == 1
    now[0] += 1.0
    assert await report.document() is not first and source.calls == 2


# ---- command backlog --------------------------------------------------------------------------
async def test_command_backlog_by_age_and_depth(db: Database) -> None:
    source = CommandBacklogSource(yellow_depth=3, red_depth=5)
    empty = await light_of(db, source)
    assert empty.light is Light.GREEN and empty.details["queued"] == 0
    first = await queue_command(db, await add_device(db, "backlog-0"))
    assert (await light_of(db, source)).light is Light.GREEN
    await age_queue(db, first, timedelta(hours=30))
    yellow = await light_of(db, source)
    assert yellow.light is Light.YELLOW and "waited 30 hours" in (yellow.reason or "")
    await age_queue(db, first, timedelta(days=8))
    red = await light_of(db, source)
    assert red.light is Light.RED and "waited 8 days" in (red.reason or "")
    await age_queue(db, first, timedelta(0))
    for i in range(1, 3):
        await queue_command(db, await add_device(db, f"backlog-{i}"))
    deep = await light_of(db, source)
    assert deep.light is Light.YELLOW and "3 commands are queued" in (deep.reason or "")
    for i in range(3, 6):
        await queue_command(db, await add_device(db, f"backlog-{i}"))
    full = await light_of(db, source)
    assert full.light is Light.RED and "5+ commands are queued" in (full.reason or "")
    assert full.details["queued"] == "5+"


# ---- certificates -----------------------------------------------------------------------------
async def _record(db: Database, ca: CertificateAuthority, name: str, days: int) -> None:
    cert = ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), common_name=name, days=days,
                    client=True)
    async with db.transaction() as session:
        session.add(IssuedCertificateRecord(
            serial=format(cert.serial_number, "x"), type="mobile", subject=cert.subject.rfc4514_string(),
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc, pem="-"))


async def test_certificates_by_expiry_of_server_and_issued_certificates(db: Database, config: Config) -> None:
    ca = await asyncio.to_thread(CertificateAuthority.load, config.ca_dir, config.ca_passphrase())
    source = CertificatesSource(lambda: ca, config.certs_dir, lambda: ["admin", "ios"], device_threshold=2)
    green = await light_of(db, source)
    assert green.light is Light.GREEN, green.reason
    assert set(green.details["not_after"]) == {"root CA", "issuing CA", "server certificate C",
                                               "server certificate ios"}

    await asyncio.to_thread(issue_server_certificate, ca, config.certs_dir, "C", ["localhost"], days=20)
    soon = await light_of(db, source)
    assert soon.light is Light.YELLOW and "server certificate C expires on" in (soon.reason or "")
    await asyncio.to_thread(issue_server_certificate, ca, config.certs_dir, "C", ["localhost"], days=3)
    red = await light_of(db, source)
    assert red.light is Light.RED and "server certificate C expires on" in (red.reason or "")
    (config.certs_dir / "C.pem").write_text("not a certificate")
    unreadable = await light_of(db, source)
    assert unreadable.light is Light.RED and "server certificate C is unreadable" in (unreadable.reason or "")
    await asyncio.to_thread(issue_server_certificate, ca, config.certs_dir, "C", ["localhost"], days=400)
    assert (await light_of(db, source)).light is Light.GREEN

    await _record(db, ca, "expiring-1", days=3)
    await _record(db, ca, "later", days=90)
    assert (await light_of(db, source)).light is Light.GREEN  # one is under the threshold
    await _record(db, ca, "expiring-2", days=5)
    many = await light_of(db, source)
    assert many.light is Light.YELLOW
    assert "2 or more issued certificates expire within 7 days" in (many.reason or "")


# ---- push -------------------------------------------------------------------------------------
async def test_push_by_identity_state_and_owed_wakeups(db: Database, config: Config) -> None:
    now = datetime.now(UTC)
    # What mdm.push.transports reads of the configured identity: mdm init's development one first.
    identity = ApnsIdentity(b"-", b"-", "com.apple.mgmt.External.test", now + timedelta(days=365),
                            development=True)
    shown: dict[str, object] = {"cert": None}

    async def read() -> dict[str, object] | None:
        return shown["cert"]  # type: ignore[return-value]

    idle = PushDispatcher(db, push_config(config), {})
    source = PushSource(idle, lambda: read)
    grey = await light_of(db, source)
    assert grey.light is Light.GREY and "neither APNs" in (grey.reason or "")

    shown["cert"] = certificate_status(identity, now)
    assert (await light_of(db, source)).light is Light.LIGHT_BLUE
    real = dataclasses.replace(identity, development=False, not_after=now + timedelta(days=300))
    shown["cert"] = certificate_status(real, now)
    assert (await light_of(db, source)).light is Light.GREEN
    shown["cert"] = certificate_status(dataclasses.replace(real, not_after=now + timedelta(days=12)), now)
    expiring = await light_of(db, source)
    assert expiring.light is Light.YELLOW and "expires in 12 days" in (expiring.reason or "")
    shown["cert"] = certificate_status(dataclasses.replace(real, not_after=now - timedelta(days=2)), now)
    expired = await light_of(db, source)
    assert expired.light is Light.RED and "push certificate expired on" in (expired.reason or "")
    shown["cert"] = certificate_status(real, now)

    device = await add_device(db, "owed")
    async with db.transaction() as session:
        session.add(PushWakeup(device_id=device, due_at=now - timedelta(hours=1), reason="command"))
    owed = await light_of(db, source)
    assert owed.light is Light.YELLOW and "owed for 60 minutes" in (owed.reason or "")


async def test_push_red_when_fcm_refuses_the_credentials_yellow_when_many_fail(
    db: Database, config: Config
) -> None:
    refused = ScriptedTransport(PushResult(Outcome.CREDENTIALS, reason="UNAUTHENTICATED", status=401))
    dispatcher = PushDispatcher(db, push_config(config), {Protocol.KES: refused})

    async def no_certificate() -> None:
        return None

    source = PushSource(dispatcher, lambda: no_certificate)
    assert (await light_of(db, source)).light is Light.GREEN
    device = await add_device(db, "kes-1", protocol=Protocol.KES)
    await dispatcher.wake(device, "command")
    await dispatcher.dispatch_once()
    red = await light_of(db, source)
    assert red.light is Light.RED and "FCM refused the credentials" in (red.reason or "")

    failing = ScriptedTransport(PushResult(Outcome.REJECTED, reason="INVALID_ARGUMENT", status=400))
    flaky = PushDispatcher(db, push_config(config), {Protocol.KES: failing})
    source = PushSource(flaky, lambda: no_certificate)
    ids = [await add_device(db, f"kes-f{i}", protocol=Protocol.KES) for i in range(20)]
    await flaky.wake_many(ids, "command")
    while await flaky.dispatch_once():
        pass
    yellow = await light_of(db, source)
    assert yellow.light is Light.YELLOW and "20 of 20 FCM pushes failed" in (yellow.reason or ""), yellow
