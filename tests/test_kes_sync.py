"""POST /kes/v1/sync over mutual TLS: commands out, results, inventory, status and agent events in,
one transaction; request ids; delivery order and limits; redelivery after the timeout."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import CommandQueueEntry, CommandStatus, utcnow
from mdm.kes.messages import schema
from mdm.kes.tables import KesDevice
from mdm.server.runtime import Server
from tests.kes_sync_support import command, device, enqueue, event_types, kes_row, new_agent, result
from tests.sql_capture import in_a_worker

pytestmark = pytest.mark.asyncio


@pytest.fixture
def extra_config() -> str:
    return "[kes]\nmin_sync_spacing_seconds = 0\nmax_commands_per_sync = 3\n"


def _valid_answer(body: dict[str, object]) -> None:
    import jsonschema_rs

    jsonschema_rs.validator_for(schema("sync_answer")).validate(body)


async def test_an_idle_sync_answers_the_interval_and_nothing_to_do(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    async with agent.client(server) as client:
        response = await agent.sync(client)
    assert response.status_code == 200, response.text
    body = response.json()
    _valid_answer(body)
    assert body == {"v": 1, "commands": [], "policy": None, "sync_interval": 900, "renew_certificate": False}


async def test_commands_go_out_by_priority_then_age_at_most_the_limit(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    alarm = await enqueue(db, agent.device_id, "Alarm", {"duration_seconds": 5})  # priority 30
    info = await enqueue(db, agent.device_id, "RefreshDeviceInfo")  # 10
    wipe = await enqueue(db, agent.device_id, "Wipe")  # 100
    lock = await enqueue(db, agent.device_id, "Block", {"message": "lost"})  # 50
    async with agent.client(server) as client:
        first = (await agent.sync(client)).json()
        second = (await agent.sync(client)).json()
        third = (await agent.sync(client)).json()
    _valid_answer(first)
    assert [c["id"] for c in first["commands"]] == [wipe, lock, alarm]
    assert first["commands"][1] == {"id": lock, "type": "lock", "args": {"message": "lost"}}
    assert [c["id"] for c in second["commands"]] == [info]  # the delivered ones are not offered again
    assert third["commands"] == []
    delivered = await command(db, wipe)
    assert delivered.status == CommandStatus.PROCESSING and delivered.delivered_at is not None


async def test_results_complete_commands_and_journal_them(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    lock = await enqueue(db, agent.device_id, "Block")
    alarm = await enqueue(db, agent.device_id, "Alarm")
    async with agent.client(server) as client:
        await agent.sync(client)
        response = await agent.sync(client, results=[
            result(lock), result(alarm, "failed", error="no speaker"),
        ])
    assert response.status_code == 200, response.text
    done, failed = await command(db, lock), await command(db, alarm)
    assert done.status == CommandStatus.COMPLETED and done.finished_at is not None
    assert failed.status == CommandStatus.FAILED and failed.result_info == "no speaker"
    types = await event_types(db, agent.device_id)
    assert types.count("command_completed") == 1 and types.count("command_failed") == 1


async def test_locate_stores_the_location_with_its_time(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    guid = await enqueue(db, agent.device_id, "Locate")
    at = "2026-12-03T10:00:00+00:00"
    async with agent.client(server) as client:
        await agent.sync(client)
        response = await agent.sync(client, results=[result(guid, data={
            "latitude": 48.85, "longitude": 2.35, "accuracy_m": 12.5, "at": at})])
    assert response.status_code == 200, response.text
    stored = (await device(db, agent.device_id)).inventory["location"]
    assert stored == {"refreshed_at": at, "values": {"latitude": 48.85, "longitude": 2.35, "accuracy_m": 12.5,
                                                      "at": at}}
    assert "kes_location_updated" in await event_types(db, agent.device_id)


async def test_a_locate_result_without_coordinates_is_refused_whole(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    guid = await enqueue(db, agent.device_id, "Locate")
    async with agent.client(server) as client:
        await agent.sync(client)
        response = await agent.sync(client, results=[result(guid, data={"latitude": 1})],
                                     status={"battery_level": 5})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_result"
    assert (await command(db, guid)).status == CommandStatus.PROCESSING
    assert "kes_status" not in (await device(db, agent.device_id)).attributes


async def test_inventory_deltas_status_and_events_in_one_sync(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    async with agent.client(server) as client:
        first = await agent.sync(client, inventory={
            "device_info": {"name": "Pixel of Alice", "model": "Pixel 8", "os_version": "14",
                            "serial_number": "SER1", "imei": "3567"},
            "apps": {"items": [{"package": "com.example.mail", "version": "1.2"}]},
        }, status={"battery_level": 77, "charging": True},
            events=[{"type": "app.installed", "at": utcnow().isoformat(), "severity": "warning",
                     "body": {"package": "com.example.mail"}}])
        assert first.status_code == 200, first.text
        # A delta replaces only the parts it names.
        second = await agent.sync(client, inventory={"security": {"encrypted": True}})
        assert second.status_code == 200, second.text
    stored = await device(db, agent.device_id)
    facts = (stored.name, stored.model, stored.os_name, stored.os_version, stored.serial_number, stored.imei)
    assert facts == ("Pixel of Alice", "Pixel 8", "Android", "14", "SER1", "3567")
    assert stored.inventory["apps"]["items"] == [{"package": "com.example.mail", "version": "1.2"}]
    assert stored.inventory["device_info"]["values"]["model"] == "Pixel 8"
    assert stored.inventory["security"]["values"] == {"encrypted": True}
    assert all("refreshed_at" in part for part in stored.inventory.values())
    assert stored.attributes["kes_status"]["battery_level"] == 77
    types = await event_types(db, agent.device_id)
    assert types.count("kes_inventory_updated") == 2 and "kes_agent_event" in types


async def test_refresh_device_info_result_carries_the_inventory(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    guid = await enqueue(db, agent.device_id, "RefreshDeviceInfo")
    async with agent.client(server) as client:
        await agent.sync(client)
        response = await agent.sync(client, results=[result(guid, data={
            "inventory": {"device_info": {"model": "Galaxy S24"}, "storage": {"free_mb": 1000}}})])
    assert response.status_code == 200, response.text
    stored = await device(db, agent.device_id)
    assert stored.model == "Galaxy S24" and stored.inventory["storage"]["values"] == {"free_mb": 1000}
    assert (await command(db, guid)).result_data == {"parts": ["device_info", "storage"]}


async def test_wipe_and_remove_results_change_the_device(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config, fcm_token="token")
    remove = await enqueue(db, agent.device_id, "Remove")
    async with agent.client(server) as client:
        await agent.sync(client)
        pending = await enqueue(db, agent.device_id, "Alarm")
        response = await agent.sync(client, results=[result(remove)])
        assert response.status_code == 200, response.text
        # The binding has ended: the certificate no longer identifies a managed device.
        after = await agent.sync(client)
    assert after.status_code == 403 and after.json()["error"]["code"] == "device_not_managed"
    stored = await device(db, agent.device_id)
    assert (stored.status, stored.push_token, stored.push_valid) == ("unmanaged", None, False)
    assert (await command(db, pending)).status == CommandStatus.FAILED
    assert "kes_device_removed" in await event_types(db, agent.device_id)

    other = await new_agent(db, config)
    wipe = await enqueue(db, other.device_id, "Wipe")
    async with other.client(server) as client:
        await other.sync(client)
        assert (await other.sync(client, results=[result(wipe)])).status_code == 200
    assert (await device(db, other.device_id)).status == "wiped"


async def test_a_repeated_request_gets_the_same_answer_and_applies_nothing_twice(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    lock = await enqueue(db, agent.device_id, "Block")
    body = agent.message(events=[{"type": "boot", "at": utcnow().isoformat()}])
    async with agent.client(server) as client:
        first = await client.post("/kes/v1/sync", json=body)
        await enqueue(db, agent.device_id, "Alarm")
        again = await client.post("/kes/v1/sync", json=body)
        # The same id with another body is refused, and applies nothing.
        changed = await client.post("/kes/v1/sync", json={**body, "status": {"battery_level": 1}})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and [c["id"] for c in first.json()["commands"]] == [lock]
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "request_id_reused"
    assert (await event_types(db, agent.device_id)).count("kes_agent_event") == 1
    assert "kes_status" not in (await device(db, agent.device_id)).attributes


async def test_the_request_id_is_checked_against_the_database_too(
    server: Server, config: Config, db: Database
) -> None:
    """Another replica (or a restart) has no memory of the request: the stored id decides."""
    agent = await new_agent(db, config)
    await enqueue(db, agent.device_id, "Block")
    body = agent.message()
    async with agent.client(server) as client:
        first = await client.post("/kes/v1/sync", json=body)
        server.ctx.services[_sync_key()].replies._last.clear()
        again = await client.post("/kes/v1/sync", json=body)
        server.ctx.services[_sync_key()].replies._last.clear()
        reused = await client.post("/kes/v1/sync", json={**body, "wait": 1})
    assert again.json() == first.json() and len(first.json()["commands"]) == 1
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "request_id_reused"
    stored = await kes_row(db, agent.device_id)
    assert stored.last_request_id == body["request_id"] and stored.last_answer == first.json()


def _sync_key():  # type: ignore[no-untyped-def]
    from mdm.kes.keys_sync import SYNC

    return SYNC


async def test_an_unanswered_command_is_offered_again_after_the_redelivery_timeout(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    lock = await enqueue(db, agent.device_id, "Block")
    async with agent.client(server) as client:
        assert [c["id"] for c in (await agent.sync(client)).json()["commands"]] == [lock]
        assert (await agent.sync(client)).json()["commands"] == []
        async with db.transaction() as session:  # the timeout has passed
            past = utcnow() - timedelta(seconds=1)
            await session.execute(update(CommandQueueEntry).values(not_before=past))
        server.ctx.services[_sync_key()].hint.clear()
        again = (await agent.sync(client)).json()["commands"]
    assert [c["id"] for c in again] == [lock]
    assert (await command(db, lock)).attempts == 2


async def test_renew_certificate_and_the_per_device_interval_come_from_the_agent_state(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    async with db.transaction() as session:
        await session.execute(update(KesDevice).where(KesDevice.device_id == agent.device_id).values(
            renew_requested_at=utcnow(), sync_interval=60))
    async with agent.client(server) as client:
        body = (await agent.sync(client)).json()
    assert body["renew_certificate"] is True and body["sync_interval"] == 60


async def test_concurrent_syncs_of_one_device_never_deliver_a_command_twice(
    server: Server, config: Config, db: Database
) -> None:
    agent = await new_agent(db, config)
    guids = {await enqueue(db, agent.device_id, t) for t in ("Block", "Alarm", "Locate", "Wipe", "Mugshot")}
    async with agent.client(server) as client:
        answers = await asyncio.gather(*(agent.sync(client) for _ in range(8)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    delivered = [c["id"] for a in answers for c in a.json()["commands"]]
    assert sorted(delivered) == sorted(guids)  # each once, none twice
    for guid in guids:
        assert (await command(db, guid)).attempts == 1


async def test_the_documented_sync_examples_match_their_schemas() -> None:
    import json
    import re
    from pathlib import Path

    import jsonschema_rs

    text = (Path(__file__).parent.parent / "docs" / "kes-protocol.md").read_text()
    section = text.split("### `POST /kes/v1/sync`", 1)[1].split("### `POST /kes/v1/mugshot`", 1)[0]
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", section, re.S)]
    assert len(blocks) == 2
    jsonschema_rs.validator_for(schema("sync")).validate(blocks[0])
    _valid_answer(blocks[1])
    commands = text.split("## Commands", 1)[1]
    for block in re.findall(r"```json\n(.*?)```", commands, re.S):
        jsonschema_rs.validator_for(schema("sync")).validate(json.loads(block))


async def test_an_idle_sync_costs_no_database_work_once_warm(
    server: Server, config: Config, db: Database
) -> None:
    from sqlalchemy import event

    agent = await new_agent(db, config)
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        # The policy resolver's freshness check (at most once a second per process, whatever the
        # number of syncs) and the server's workers (the outbox's upkeep) are not the sync's.
        if "policy_state" not in statement and not in_a_worker():
            statements.append(statement)

    engine = server.ctx.db.engine.sync_engine
    async with agent.client(server) as client:
        assert (await agent.sync(client)).status_code == 200  # warms the caches
        event.listen(engine, "before_cursor_execute", record)
        try:
            for _ in range(5):
                assert (await agent.sync(client)).json()["commands"] == []
            idle = list(statements)
            guid = await enqueue(db, agent.device_id, "Block")  # the enqueue clears the hint
            statements.clear()
            assert [c["id"] for c in (await agent.sync(client)).json()["commands"]] == [guid]
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert idle == []
    assert statements  # the sync with work did go to the database
