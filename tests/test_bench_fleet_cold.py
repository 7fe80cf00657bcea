"""``mdm bench fleet``'s cold-poll phase (``mdm.bench.fleet_cold``): the polls are signed before
the timed window, as many as asked (answering devices first, then the next fleet devices, each
once), and the server's CPU per poll is reported (its backends' too on PostgreSQL)."""

from __future__ import annotations

import os

from conftest import listener_url
from cryptography import x509

from mdm.bench import fleet_cold, fleet_prepare
from mdm.config import Config
from mdm.db.engine import Database
from mdm.server.runtime import Server
from mdm.sim.fleet import Fleet, Member

TOPIC = "com.apple.mgmt.External.bench-fleet-cold-test"


def _fleet(config: Config, server: Server, members: list[Member]) -> Fleet:
    roots = [x509.load_pem_x509_certificate((config.ca_dir / "root.pem").read_bytes())]
    base = listener_url(server, "ios")
    return Fleet(members, server_url=f"{base}/mdm/server", checkin_url=f"{base}/mdm/checkin",
                 topic=TOPIC, trusted_roots=roots, concurrency=3)


async def test_cold_members_take_the_answering_first_then_the_next_each_once(config: Config) -> None:
    await fleet_prepare.prepare(config, 8, topic=TOPIC, key_type="ec")
    fleet = await fleet_prepare.driven_members(config, 8)
    answered = [fleet[5], fleet[2]]
    chosen = fleet_cold.cold_members(answered, fleet, 5)
    assert [m.udid for m in chosen] == [fleet[i].udid for i in (5, 2, 0, 1, 3)]
    assert [m.udid for m in fleet_cold.cold_members(answered, fleet, 1)] == [fleet[5].udid]
    assert len(fleet_cold.cold_members(answered, fleet, 20)) == 8  # no more than the fleet


async def test_a_presigned_poll_is_reused_and_accepted(config: Config, server: Server, db: Database) -> None:
    await fleet_prepare.prepare(config, 6, topic=TOPIC, key_type="ec")
    members = await fleet_prepare.driven_members(config, 6)
    async with _fleet(config, server, members) as fleet:
        fleet.presign(members)
        signed = [m.idle_request() for m in members]
        assert all("Mdm-Signature" in headers for _, headers in signed)
        assert [m.idle_request() for m in members] == signed  # nothing signed again
        said: list[str] = []
        report = await fleet_cold.cold_polls(fleet, members, say=said.append, pid=os.getpid(),
                                             database_url=config.database_url)
    assert report["requests"] == 6 and report["errors"] == {}
    assert report["server_cpu_us_per_poll"] > 0
    # (on PostgreSQL /proc's 10 ms ticks: six polls may read 0)
    assert ("backend_cpu_us_per_poll" in report) == (not db.is_sqlite)
    assert report.get("backend_cpu_us_per_poll", 0) >= 0
    assert any("signing 6 idle polls" in line for line in said)


async def test_settle_returns_once_the_process_is_quiet() -> None:
    waited = await fleet_cold.settle(os.getpid(), limit_s=5.0, window=0.1)
    assert waited < 1.0  # the test process idles while it waits
