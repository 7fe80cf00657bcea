"""The traffic lights stay cheap at 10^6 devices: every statement a source sends is planned by
SQLite as index look-ups or a bounded walk (``LIMIT``) of an index, never a scan or a sort of a
fleet-sized table; and the number of statements per light does not grow with the fleet.
(PostgreSQL plans by statistics; the statements are the same.)"""

from __future__ import annotations

import os
import random
import re
from typing import Any

import pytest
from sql_capture import selects

from mdm.config import Config
from mdm.core.status import StatusSource
from mdm.core.status_commands import CommandBacklogSource
from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.enroll.status import EnrollmentSource
from mdm.kes.status import AndroidSource
from mdm.kes.tables import KesDevice
from mdm.pki.ca import CertificateAuthority
from mdm.pki.status import CertificatesSource
from mdm.push.config import push_config
from mdm.push.dispatcher import PushDispatcher
from mdm.push.status import PushSource
from tests.push_dispatch_support import ScriptedTransport, add_device, queue_command
from tests.status_support import add_enrollment, add_user, light_of

FLEET_TABLES = ("devices", "commands", "command_queue", "kes_devices", "enrollments", "certificates",
                "push_wakeups", "events", "command_journal")


async def _no_certificate() -> None:
    return None


def _sources(db: Database, config: Config) -> list[StatusSource]:
    ca = CertificateAuthority.load(config.ca_dir, config.ca_passphrase())
    return [
        CommandBacklogSource(),
        EnrollmentSource(lambda: True),
        AndroidSource(lambda: True, lambda: True, lambda: True, lambda: 900, rng=random.Random(3)),
        CertificatesSource(lambda: ca, config.certs_dir, lambda: ["admin"]),
        PushSource(PushDispatcher(db, push_config(config), {Protocol.KES: ScriptedTransport()}),
                   lambda: _no_certificate),
    ]


async def _statements(db: Database, source: StatusSource) -> list[tuple[str, Any]]:
    with selects(db) as seen:
        await light_of(db, source)
    return seen


async def _fleet(db: Database, n: int) -> None:
    user = await add_user(db, f"u{n}")
    for i in range(n):
        device = await add_device(db, f"plan-{n}-{i}", protocol=Protocol.KES if i % 2 else Protocol.IOS)
        await queue_command(db, device)
        await add_enrollment(db, user, email=f"x{i}@example.com", status="expired", mailed=True)
        if i % 2:
            async with db.transaction() as session:
                session.add(KesDevice(device_id=device, cert_fingerprint=os.urandom(32)))


async def test_every_statement_of_every_light_is_an_index_lookup_or_a_bounded_walk(
    db: Database, config: Config
) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite's query plan")
    await _fleet(db, 3)
    for source in _sources(db, config):
        statements = await _statements(db, source)
        assert statements, source.area
        for statement, parameters in statements:
            async with db.engine.connect() as conn:
                rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                plan = [str(r[-1]) for r in rows]
            for step in plan:
                scan = re.match(r"SCAN (\w+)", step)
                if scan and scan.group(1) in FLEET_TABLES:
                    # A walk of a table or index in key order is only allowed under a LIMIT.
                    assert "LIMIT" in statement.upper(), (source.area, statement, plan)
                # A sort only of a bounded subquery's rows (LIMIT), never of every matching row.
                assert not (step.startswith("USE TEMP B-TREE") and "LIMIT" not in statement.upper()), (
                    source.area, statement, plan)


async def test_the_statements_per_light_do_not_grow_with_the_fleet(db: Database, config: Config) -> None:
    await _fleet(db, 2)
    small = {s.area: len(await _statements(db, s)) for s in _sources(db, config)}
    await _fleet(db, 40)
    large = {s.area: len(await _statements(db, s)) for s in _sources(db, config)}
    # (A light may stop early: a red or yellow rule found needs no further statement.)
    assert all(large[area] <= small[area] <= 4 for area in small), (small, large)


async def test_postgresql_finds_an_index_for_every_statement(db: Database, config: Config) -> None:
    """With sequential scans priced out, PostgreSQL still plans no sequential scan of a fleet
    table: an index serves every statement (on a big table the planner picks it by statistics)."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's query plan")
    await _fleet(db, 3)
    for source in _sources(db, config):
        for statement, parameters in await _statements(db, source):
            async with db.engine.connect() as conn:
                await conn.exec_driver_sql("SET enable_seqscan = off")
                rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
                plan = "\n".join(str(r[0]) for r in rows)
                await conn.exec_driver_sql("RESET enable_seqscan")
            for table in FLEET_TABLES:
                assert f"Seq Scan on {table} " not in plan, (source.area, statement, plan)
