"""The end of ``mdm bench fleet``: the recall of what the silent devices did not fetch.

At 10^6 devices ``DELETE /api/v1/bulk/{id}`` recalls ~990,000 commands before it answers, and the
server is busy meanwhile: the bench's HTTP client timed out and the whole report was lost. Here a
small fake admin API plays that server: its DELETE answers later than the client's per-request
timeout, its first GETs too, and the recall only ends after a while. The recall must still end
with the final status, a recall that never ends must stop at its own deadline, and whatever
happens the report keeps every phase measured before and says what failed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mdm.bench import fleet_recall, fleet_report
from mdm.bench.phases import Admin

BULK_ID = 7
REQUEST_TIMEOUT = 0.3  # the client's per-request timeout in these tests


@dataclass
class FakeAdmin:
    """``DELETE``/``GET /api/v1/bulk/7`` of a server busy recalling: the DELETE answers after
    ``delete_s``, the first ``slow_gets`` GETs after ``slow_get_s``; the recall ends ``recall_s``
    after the DELETE arrived (never when None)."""

    delete_s: float = 1.0
    slow_gets: int = 2
    slow_get_s: float = 1.0
    recall_s: float | None = 1.5
    deletes: int = 0
    gets: int = 0
    recall_started: float | None = None
    base: str = ""
    log: list[str] = field(default_factory=list)

    def status(self) -> dict[str, object]:
        if self.recall_started is None:
            return {"id": BULK_ID, "state": "queued", "queued": 1000, "recalled": 0, "completed": 10}
        done = self.recall_s is not None and time.monotonic() - self.recall_started >= self.recall_s
        return {"id": BULK_ID, "state": "recalled" if done else "recalling", "queued": 1000,
                "recalled": 990 if done else 400, "completed": 10}

    async def delete(self, request: web.Request) -> web.Response:
        self.deletes += 1
        if self.recall_started is None:
            self.recall_started = time.monotonic()
        await asyncio.sleep(self.delete_s)
        return web.json_response(self.status())

    async def get(self, request: web.Request) -> web.Response:
        self.gets += 1
        if self.gets <= self.slow_gets:
            await asyncio.sleep(self.slow_get_s)
        return web.json_response(self.status())


@pytest.fixture
async def fake() -> AsyncIterator[FakeAdmin]:
    state = FakeAdmin()
    app = web.Application(handler_args={"handler_cancellation": False})
    app.router.add_delete(f"/api/v1/bulk/{BULK_ID}", state.delete)
    app.router.add_get(f"/api/v1/bulk/{BULK_ID}", state.get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # a port of the kernel's: only this process connects
    await site.start()
    state.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def admin(fake: FakeAdmin) -> AsyncIterator[Admin]:
    client = Admin(fake.base, "token", [])
    # The client as the bench has it, with a per-request timeout shorter than the busy server's answers.
    await client.session.close()
    client.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
    try:
        yield client
    finally:
        await client.close()


async def test_a_recall_slower_than_the_client_timeout_ends_with_the_final_status(
    fake: FakeAdmin, admin: Admin
) -> None:
    status = await fleet_recall.recall(admin, BULK_ID, deadline_s=20, interval_s=0.1)
    assert status["state"] == "recalled" and status["recalled"] == 990
    assert fake.deletes == 1  # the server took the DELETE: not sent again while it recalls
    assert fake.gets > fake.slow_gets  # the timed-out GETs were retried


async def test_a_recall_that_never_ends_stops_at_its_own_deadline(fake: FakeAdmin, admin: Admin) -> None:
    fake.recall_s = None
    t0 = time.monotonic()
    with pytest.raises(fleet_recall.RecallError, match=r"not recalled after 2s \(state recalling"):
        await fleet_recall.recall(admin, BULK_ID, deadline_s=2.0, interval_s=0.1)
    assert time.monotonic() - t0 < 2.0 + 2 * REQUEST_TIMEOUT + 1.0


async def test_a_slow_recall_at_the_end_keeps_the_report(
    fake: FakeAdmin, admin: Admin, tmp_path: Path
) -> None:
    report = fleet_report.Report(setup={"devices": 1000, "answering": 10}, bulk={"bulk_id": BULK_ID},
                          storm={"devices": 10, "messages_per_s": 500.0})
    pending = tmp_path / "pending"
    pending.write_text(str(BULK_ID))
    await fleet_recall.recall_at_the_end(admin, report, BULK_ID, pending=pending, deadline_s=20,
                                         say=lambda _: None)
    assert report.recall["state"] == "recalled" and report.recall["recalled"] == 990
    assert report.storm["messages_per_s"] == 500.0 and "recall" not in report.errors
    assert not pending.exists()


async def test_a_failed_recall_is_recorded_and_every_phase_measured_is_still_reported(
    fake: FakeAdmin, admin: Admin, tmp_path: Path
) -> None:
    fake.recall_s = None
    report = fleet_report.Report(setup={"devices": 1000, "answering": 10},
                          storm={"devices": 10, "seconds": 0.04, "messages_per_s": 500.0, "errors": {},
                                 "server_cpu_ms_per_message": 1.5})
    pending = tmp_path / "pending"
    pending.write_text(str(BULK_ID))
    await fleet_recall.recall_at_the_end(admin, report, BULK_ID, pending=pending, deadline_s=1.0,
                                         say=lambda _: None)
    assert "not recalled" in report.errors["recall"]
    assert pending.exists()  # the next run recalls it first
    document = json.loads(json.dumps(report.as_dict(), default=sorted))
    assert document["storm"]["messages_per_s"] == 500.0 and "recall" in document["errors"]
    text = fleet_report.render(report)
    assert "(g) check-in storm: 500.0 messages/s" in text and "recall failed" in text


async def test_a_phase_that_raises_is_recorded_and_the_run_goes_on() -> None:
    report = fleet_report.Report()
    said: list[str] = []
    async with fleet_report.guarded(report, "pages", said.append):
        raise TimeoutError()
    async with fleet_report.guarded(report, "storm", said.append):
        report.storm = {"devices": 1}
    assert report.errors == {"pages": "TimeoutError"} and report.storm == {"devices": 1}
    assert any("pages" in line and "TimeoutError" in line for line in said)


class CountingFake:
    """The APNs fake's counter of accepted pushes; ``down``: its control API does not answer."""

    def __init__(self) -> None:
        self.accepted = 1_000_000
        self.down = False

    async def stats(self) -> dict[str, object]:
        if self.down:
            raise aiohttp.ClientConnectionError("refused")
        return {"accepted": self.accepted}


async def test_the_pushes_the_server_made_during_a_phase_are_reported() -> None:
    fake = CountingFake()
    report = fleet_report.Report(setup={"devices": 1000, "answering": 10})
    async with fleet_report.pushes_meanwhile(fake) as pushes:
        report.storm = {"devices": 10, "seconds": 0.2, "messages_per_s": 100.0, "errors": {},
                        "server_cpu_ms_per_message": 2.0}
        fake.accepted += 450  # the server re-pushing silent devices while the storm ran
        await asyncio.sleep(0.2)
    report.storm |= pushes
    assert report.storm["pushes_meanwhile"] == 450 and 0 < report.storm["pushes_per_s"] <= 450 / 0.2
    assert "meanwhile the server pushed" in fleet_report.render(report)


async def test_a_fake_that_does_not_answer_costs_the_phase_nothing() -> None:
    fake = CountingFake()
    fake.down = True
    async with fleet_report.pushes_meanwhile(fake) as pushes:
        pass
    assert pushes == {}
