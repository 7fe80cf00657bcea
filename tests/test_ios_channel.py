"""Command channel over real TLS: ordering, one command per response, results, NotNow, replays,
EraseDevice/Remove, inventory, the queue hint and last_seen write-behind."""

from __future__ import annotations

import asyncio
import plistlib
from datetime import datetime, timedelta

import httpx
import pytest
from conftest import PG_URL
from ios_support import FIXTURES, Phone, device_id_of, new_phone, queue_command, snapshot
from sql_capture import in_a_worker
from sqlalchemy import func, select

from mdm.core import command_enqueue
from mdm.db.engine import Database
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, Device, Event, Protocol, utcnow
from mdm.ios import plugin as ios_plugin
from mdm.ios.tables import IosPushRequest
from mdm.pki import services as pki_services
from mdm.server.runtime import Server


async def _command(db: Database, guid: str) -> Command:
    async with db.session() as session:
        command = await session.scalar(select(Command).where(Command.guid == guid))
        assert command is not None
        return command


def _offered(response: httpx.Response) -> tuple[str, str] | None:
    assert response.status_code == 200, response.text
    if not response.content:
        return None
    body = plistlib.loads(response.content)
    return body["CommandUUID"], body["Command"]["RequestType"]


async def test_idle_with_empty_queue_is_empty_200(ios, phone: Phone) -> None:
    response = await phone.report(ios)
    assert response.status_code == 200 and response.content == b""


async def test_priority_then_age_one_command_per_response(ios, phone: Phone, db: Database) -> None:
    device_id = await device_id_of(db, phone.udid)
    low_old = await queue_command(db, device_id, {"RequestType": "ProfileList"}, type_="Raw")
    high = await queue_command(db, device_id, {"RequestType": "EraseDevice"}, type_="Wipe", priority=100)
    low_new = await queue_command(db, device_id, {"RequestType": "SecurityInfo"}, type_="Locate")
    first = _offered(await phone.report(ios))
    assert first == (high, "EraseDevice")
    # The device answers Error for it; the next is the oldest of equal priority.
    second = _offered(
        await phone.report(
            ios,
            "Error",
            high,
            ErrorChain=[
                {"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain", "USEnglishDescription": "Busy"}
            ],
        )
    )
    assert second == (low_old, "ProfileList")
    third = _offered(await phone.report(ios, "Acknowledged", low_old, ProfileList=[]))
    assert third == (low_new, "SecurityInfo")
    assert _offered(await phone.report(ios, "CommandFormatError", low_new)) is None
    erase = await _command(db, high)
    assert erase.status == "failed" and "12021" in (erase.result_info or "")
    assert (await _command(db, low_old)).status == "completed"
    fmt = await _command(db, low_new)
    assert fmt.status == "failed" and "CommandFormatError" in (fmt.result_info or "")
    async with db.session() as session:
        assert (
            await session.scalar(select(func.count()).select_from(CommandQueueEntry)) == 0
        )  # hot queue empty
        journal = (
            await session.scalars(
                select(CommandJournalEntry.status)
                .where(CommandJournalEntry.command_id == erase.id)
                .order_by(CommandJournalEntry.id)
            )
        ).all()
    assert journal == ["processing", "delivered", "failed"]


async def test_not_now_skips_only_that_exchange_and_schedules_push(ios, phone: Phone, db: Database) -> None:
    device_id = await device_id_of(db, phone.udid)
    a = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    b = await queue_command(
        db,
        device_id,
        {"RequestType": "DeviceInformation", "Queries": ["OSVersion"]},
        type_="RefreshDeviceInfo",
    )
    assert _offered(await phone.report(ios)) == (a, "DeviceLock")
    # NotNow for a: b is offered instead in the same response.
    assert _offered(await phone.report(ios, "NotNow", a)) == (b, "DeviceInformation")
    # Answering b: a stays deferred for the rest of this exchange.
    assert _offered(await phone.report(ios, "Acknowledged", b, QueryResponses={"OSVersion": "17.6"})) is None
    async with db.session() as session:
        push = await session.get(IosPushRequest, device_id)
        entry = await session.scalar(
            select(CommandQueueEntry).where(CommandQueueEntry.device_id == device_id)
        )
    assert push is not None and push.reason == "notnow"
    assert entry is not None and entry.not_now_count == 1 and not entry.in_flight
    # The next exchange (Idle) offers a again, in its original place.
    assert _offered(await phone.report(ios)) == (a, "DeviceLock")
    assert _offered(await phone.report(ios, "Acknowledged", a)) is None
    assert (await _command(db, a)).status == "completed"


async def test_replayed_or_foreign_reports_are_400_without_change(
    ios, phone: Phone, db: Database, server: Server
) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    # Not delivered yet: an answer is a forgery/replay.
    before = await snapshot(db)
    assert (await phone.report(ios, "Acknowledged", guid)).status_code == 400
    assert await snapshot(db) == before
    assert _offered(await phone.report(ios)) == (guid, "DeviceLock")
    assert _offered(await phone.report(ios, "Acknowledged", guid)) is None
    # Replaying the acknowledgement after completion.
    before = await snapshot(db)
    replay = await phone.report(ios, "Acknowledged", guid)
    assert replay.status_code == 400 and replay.json()["error"]["code"] == "replayed"
    assert await snapshot(db) == before
    # Unknown UUID, and another device's command.
    assert (
        await phone.report(ios, "Acknowledged", "00000000-0000-0000-0000-000000000000")
    ).status_code == 400
    other = await new_phone(db, pki_services.ca(server.ctx))
    await other.enroll(ios)
    theirs = await queue_command(
        db, await device_id_of(db, other.udid), {"RequestType": "DeviceLock"}, type_="Block"
    )
    assert _offered(await other.report(ios)) == (theirs, "DeviceLock")
    before = await snapshot(db)
    assert (await phone.report(ios, "Acknowledged", theirs)).status_code == 400
    assert await snapshot(db) == before
    async with db.session() as session:
        replays = (
            await session.scalars(select(Event).where(Event.type == "security_message_rejected"))
        ).all()
    assert [e.body["reason"] for e in replays] == ["replay", "replay"]


async def test_acknowledged_erase_marks_device_wiped(ios, phone: Phone, db: Database) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "EraseDevice"}, type_="Wipe", priority=100)
    assert _offered(await phone.report(ios)) == (guid, "EraseDevice")
    await phone.report(ios, "Acknowledged", guid)
    async with db.session() as session:
        device = await session.get(Device, device_id)
        wiped = (await session.scalars(select(Event).where(Event.type == "device_wiped"))).all()
    assert device is not None and device.status == "wiped" and len(wiped) == 1


async def test_acknowledged_remove_marks_device_unmanaged(ios, phone: Phone, db: Database) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(
        db, device_id, {"RequestType": "RemoveProfile", "Identifier": "com.example.mdm"}, type_="Remove"
    )
    assert _offered(await phone.report(ios)) == (guid, "RemoveProfile")
    await phone.report(ios, "Acknowledged", guid)
    async with db.session() as session:
        device = await session.get(Device, device_id)
    assert device is not None and device.status == "unmanaged"


async def test_clear_passcode_gets_the_stored_unlock_token(ios, phone: Phone, db: Database) -> None:
    device_id = await device_id_of(db, phone.udid)
    guid = await queue_command(db, device_id, {"RequestType": "ClearPasscode"}, type_="Unblock")
    response = await phone.report(ios)
    body = plistlib.loads(response.content)
    assert body["CommandUUID"] == guid and body["Command"]["UnlockToken"] == b"unlock-secret"


async def test_a_command_that_cannot_be_sent_fails_and_the_next_goes_out(
    ios, phone: Phone, db: Database
) -> None:
    device_id = await device_id_of(db, phone.udid)
    # plistlib cannot encode None: the command is failed at delivery, never counted as sent.
    broken = await queue_command(db, device_id, {"RequestType": "DeviceLock", "Message": None}, priority=5)
    good = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    assert _offered(await phone.report(ios)) == (good, "DeviceLock")
    failed = await _command(db, broken)
    assert failed.status == "failed" and "property list" in (failed.result_info or "")
    assert failed.attempts == 0 and failed.delivered_at is None
    async with db.session() as session:
        statuses = (await session.scalars(
            select(CommandJournalEntry.status).where(CommandJournalEntry.command_id == failed.id)
            .order_by(CommandJournalEntry.id)
        )).all()
        assert statuses == ["processing", "failed"]
        assert await session.get(CommandQueueEntry, failed.id) is None
    sent = await _command(db, good)
    assert sent.attempts == 1 and sent.delivered_at is not None


async def test_data_marker_becomes_plist_data(ios, phone: Phone, db: Database) -> None:
    device_id = await device_id_of(db, phone.udid)
    payload = {"RequestType": "InstallProfile", "Payload": {"__data__": "AAEC"}}
    await queue_command(db, device_id, payload, type_="InstallConfProf")
    body = plistlib.loads((await phone.report(ios)).content)
    assert body["Command"]["Payload"] == b"\x00\x01\x02"


async def test_inventory_answers_fill_the_device_record(ios, phone: Phone, db: Database, api) -> None:
    device_id = await device_id_of(db, phone.udid)
    answers = {
        "DeviceInformation": FIXTURES / "commandment/DeviceInformation/iOS-11.3.1.xml",
        "SecurityInfo": FIXTURES / "commandment/SecurityInfo/iOS-11.3.1.xml",
        "InstalledApplicationList": FIXTURES / "commandment/InstalledApplicationList/iOS-11.3.1.xml",
        "ProfileList": FIXTURES / "commandment/ProfileList/iOS-11.3.1.xml",
    }
    for request_type, path in answers.items():
        guid = await queue_command(
            db, device_id, {"RequestType": request_type}, type_=f"T{request_type}"[:64]
        )
        assert _offered(await phone.report(ios)) == (guid, request_type)
        answer = plistlib.loads(path.read_bytes())
        answer["UDID"] = phone.udid
        answer["CommandUUID"] = guid
        response = await phone.report(
            ios, **{k: v for k, v in answer.items() if k not in ("UDID", "Status")}, status=answer["Status"]
        )
        assert response.status_code == 200, response.text
    detail = (await api.get(f"/api/v1/devices/{device_id}")).json()
    assert (detail["os_version"], detail["build_version"], detail["model"]) == ("11.3.1", "15E302", "iPad4,1")
    assert detail["name"] == "iPad" and detail["serial_number"] == "C00000000004"
    inventory = detail["inventory"]
    assert inventory["device_info"]["values"]["DeviceCapacity"] == pytest.approx(26.914535522460938)
    assert inventory["security"]["values"]["PasscodePresent"] is False
    apps = [a["Identifier"] for a in inventory["apps"]["items"]]
    assert "com.microsoft.lync2013.iphone" in apps
    profiles = inventory["profiles"]["items"]
    assert any(p["PayloadType"] == "com.apple.mdm" for prof in profiles for p in prof["payloads"])
    assert all("refreshed_at" in part for part in inventory.values())
    async with db.session() as session:
        updated = (await session.scalars(select(Event).where(Event.type == "inventory_updated"))).all()
    assert {e.body["part"] for e in updated} == {"device_info", "security", "apps", "profiles"}


async def test_certificate_and_managed_app_lists(ios, phone: Phone, db: Database, server: Server) -> None:
    device_id = await device_id_of(db, phone.udid)
    from cryptography.hazmat.primitives.serialization import Encoding

    der = phone.cert.public_bytes(Encoding.DER)
    guid = await queue_command(db, device_id, {"RequestType": "CertificateList"}, type_="C1")
    assert _offered(await phone.report(ios)) == (guid, "CertificateList")
    await phone.report(
        ios,
        "Acknowledged",
        guid,
        CertificateList=[
            {"CommonName": "identity", "Data": der, "IsIdentity": True},
            {"CommonName": "broken", "Data": b"xx", "IsIdentity": False},
        ],
    )
    guid = await queue_command(db, device_id, {"RequestType": "ManagedApplicationList"}, type_="C2")
    assert _offered(await phone.report(ios)) == (guid, "ManagedApplicationList")
    await phone.report(
        ios,
        "Acknowledged",
        guid,
        ManagedApplicationList={"com.example.app": {"Status": "Managed", "ManagementFlags": 1}},
    )
    async with db.session() as session:
        device = await session.get(Device, device_id)
    assert device is not None
    certs = device.inventory["certificates"]["items"]
    assert certs[0]["is_identity"] is True and certs[0]["serial"] == phone.serial
    assert "O=mdm" in certs[0]["issuer"] and certs[0]["not_after"]
    assert certs[1]["error"]
    assert device.inventory["managed_apps"]["items"] == [
        {"Identifier": "com.example.app", "Status": "Managed", "ManagementFlags": 1}
    ]


async def test_enqueue_clears_the_empty_queue_hint(ios, phone: Phone, db: Database, server: Server) -> None:
    svc = ios_plugin.service(server.ctx)
    device_id = await device_id_of(db, phone.udid)
    assert _offered(await phone.report(ios)) is None
    assert svc.hint.known_empty(device_id)
    # The admin path (core.command_enqueue.enqueue through the ORM) must clear the hint.
    async with db.transaction() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        command = await command_enqueue.enqueue(
            session, device, "Raw", {"RequestType": "DeviceInformation", "Queries": ["OSVersion"]},
            translators=server.ctx.translators,
        )
        guid = command.guid
    assert not svc.hint.known_empty(device_id)
    assert _offered(await phone.report(ios)) == (guid, "DeviceInformation")


class _RecordingPusher:
    """Records NotNow wake-ups with what another connection sees at that moment."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.scheduled: list[tuple[int, object, str, bool]] = []

    async def wake(self, device_id: int, reason: str) -> None:
        raise AssertionError("a NotNow must not push at once")

    async def wake_many(self, device_ids: object, reason: str) -> None:
        raise AssertionError("a NotNow must not push at once")

    async def wake_at(self, device_id: int, due: object, reason: str) -> None:
        async with self.db.session() as session:
            committed = await session.get(IosPushRequest, device_id) is not None
        self.scheduled.append((device_id, due, reason, committed))


async def test_not_now_asks_the_pusher_for_a_wake_up_after_commit(
    ios, phone: Phone, db: Database, server: Server
) -> None:
    pusher = _RecordingPusher(db)
    server.ctx.pushers.register(Protocol.IOS, pusher)
    try:
        device_id = await device_id_of(db, phone.udid)
        guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
        assert _offered(await phone.report(ios)) == (guid, "DeviceLock")
        before = utcnow()
        assert _offered(await phone.report(ios, "NotNow", guid)) is None
        [(woken, due, reason, committed)] = pusher.scheduled
        assert (woken, reason, committed) == (device_id, "notnow", True)
        backoff = ios_plugin.service(server.ctx).config.notnow_backoff_seconds
        assert isinstance(due, datetime) and due >= before + timedelta(seconds=backoff)
        # An acknowledgement asks for nothing.
        assert _offered(await phone.report(ios)) == (guid, "DeviceLock")
        assert _offered(await phone.report(ios, "Acknowledged", guid)) is None
        assert len(pusher.scheduled) == 1
    finally:
        server.ctx.pushers.unregister(Protocol.IOS)


async def test_last_seen_is_written_behind(ios, phone: Phone, db: Database, server: Server) -> None:
    svc = ios_plugin.service(server.ctx)
    device_id = await device_id_of(db, phone.udid)
    await svc.last_seen.flush(svc.db)
    async with db.transaction() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        device.last_seen_at = utcnow() - timedelta(days=1)
    await phone.report(ios)
    async with db.session() as session:
        stale = await session.scalar(select(Device.last_seen_at).where(Device.id == device_id))
    assert stale is not None and utcnow() - stale.replace(tzinfo=utcnow().tzinfo) > timedelta(hours=23)
    assert await svc.last_seen.flush(svc.db) == 1
    async with db.session() as session:
        fresh = await session.scalar(select(Device.last_seen_at).where(Device.id == device_id))
    assert fresh is not None and utcnow() - fresh.replace(tzinfo=utcnow().tzinfo) < timedelta(minutes=1)


@pytest.mark.skipif(not PG_URL, reason="LISTEN/NOTIFY needs PostgreSQL")
async def test_other_replicas_are_told_of_enqueues(ios, phone: Phone, db: Database, server: Server) -> None:
    """An enqueue NOTIFYs (transactionally); a notification from another replica clears the hint."""
    import asyncio

    import asyncpg

    from mdm.ios.notify import asyncpg_dsn

    svc = ios_plugin.service(server.ctx)
    device_id = await device_id_of(db, phone.udid)
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(asyncpg_dsn(db.url))
    await listener.add_listener("mdm_ios_queue", lambda *args: received.put_nowait(args[-1]))
    try:
        await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
        assert await asyncio.wait_for(received.get(), 5) == str(device_id)
        # Another replica's notification reaches this server's listener worker.
        assert _offered(await phone.report(ios)) is not None
        await phone.report(ios, "Acknowledged", (await _command_guids(db, device_id))[0])
        assert _offered(await phone.report(ios)) is None
        assert svc.hint.known_empty(device_id)
        other = await asyncpg.connect(asyncpg_dsn(db.url))
        try:
            await other.execute("SELECT pg_notify('mdm_ios_queue', $1)", f"999999,{device_id}")
        finally:
            await other.close()
        for _ in range(50):
            if not svc.hint.known_empty(device_id):
                break
            await asyncio.sleep(0.05)
        assert not svc.hint.known_empty(device_id)
    finally:
        await listener.close()


async def _command_guids(db: Database, device_id: int) -> list[str]:
    async with db.session() as session:
        return list((await session.scalars(select(Command.guid).where(Command.device_id == device_id))).all())


async def test_concurrent_exchanges_never_fail(ios, db: Database, server: Server) -> None:
    """Many devices answering at once (SQLite: one writer) all succeed, none sees a 500."""
    import asyncio

    phones = [await new_phone(db, pki_services.ca(server.ctx)) for _ in range(16)]
    await asyncio.gather(*(p.enroll(ios) for p in phones))
    guids = {}
    for p in phones:
        guids[p.udid] = await queue_command(
            db, await device_id_of(db, p.udid), {"RequestType": "DeviceLock"}, type_="Block"
        )

    async def exchange(p: Phone) -> None:
        offered = _offered(await p.report(ios))
        assert offered == (guids[p.udid], "DeviceLock")
        assert _offered(await p.report(ios, "Acknowledged", guids[p.udid])) is None

    await asyncio.gather(*(exchange(p) for p in phones))
    for guid in guids.values():
        assert (await _command(db, guid)).status == "completed"


async def test_multi_step_command_is_delivered_step_by_step(ios, phone: Phone, db: Database) -> None:
    device_id = await device_id_of(db, phone.udid)
    payload = {
        "Steps": [
            {"RequestType": "DeviceInformation", "Queries": ["OSVersion"]},
            {"RequestType": "SecurityInfo"},
        ]
    }
    guid = await queue_command(db, device_id, payload, type_="RefreshDeviceInfo")
    first = _offered(await phone.report(ios))
    assert first == (f"{guid}.0", "DeviceInformation")
    # NotNow on a step: the same step comes back at the next exchange.
    assert _offered(await phone.report(ios, "NotNow", f"{guid}.0")) is None
    assert _offered(await phone.report(ios)) == (f"{guid}.0", "DeviceInformation")
    second = _offered(
        await phone.report(ios, "Acknowledged", f"{guid}.0", QueryResponses={"OSVersion": "18.1"})
    )
    assert second == (f"{guid}.1", "SecurityInfo")
    # The answered step cannot be answered again.
    replay = await phone.report(ios, "Acknowledged", f"{guid}.0", QueryResponses={"OSVersion": "1.0"})
    assert replay.status_code == 400
    assert (
        _offered(await phone.report(ios, "Acknowledged", f"{guid}.1", SecurityInfo={"PasscodePresent": True}))
        is None
    )
    command = await _command(db, guid)
    assert command.status == "completed" and len(command.result_data["steps"]) == 2
    async with db.session() as session:
        device = await session.get(Device, device_id)
    assert device is not None and device.os_version == "18.1"
    assert device.inventory["security"]["values"]["PasscodePresent"] is True


async def test_removing_the_mdm_profile_unmanages(ios, phone: Phone, db: Database) -> None:
    device_id = await device_id_of(db, phone.udid)
    listing = await queue_command(db, device_id, {"RequestType": "ProfileList"}, type_="L1")
    assert _offered(await phone.report(ios)) == (listing, "ProfileList")
    profiles = [
        {
            "PayloadIdentifier": "com.example.wifi",
            "PayloadContent": [{"PayloadType": "com.apple.wifi.managed"}],
        },
        {"PayloadIdentifier": "com.example.enroll", "PayloadContent": [{"PayloadType": "com.apple.mdm"}]},
    ]
    await phone.report(ios, "Acknowledged", listing, ProfileList=profiles)
    # Removing another profile changes nothing; removing the enrollment profile unmanages.
    other = await queue_command(
        db,
        device_id,
        {"RequestType": "RemoveProfile", "Identifier": "com.example.wifi"},
        type_="DeleteConfProf",
    )
    assert _offered(await phone.report(ios)) == (other, "RemoveProfile")
    await phone.report(ios, "Acknowledged", other)
    async with db.session() as session:
        assert (await session.get(Device, device_id)).status == "ok"
    mdm = await queue_command(
        db, device_id, {"RequestType": "RemoveProfile", "Identifier": "com.example.enroll"}, type_="Raw"
    )
    assert _offered(await phone.report(ios)) == (mdm, "RemoveProfile")
    await phone.report(ios, "Acknowledged", mdm)
    async with db.session() as session:
        device = await session.get(Device, device_id)
        unmanaged = (await session.scalars(select(Event).where(Event.type == "device_unmanaged"))).all()
    assert device is not None and device.status == "unmanaged" and len(unmanaged) == 1


async def test_steady_idle_poll_needs_at_most_one_query(ios, phone: Phone, server: Server) -> None:
    """The hot path: a cached binding, then one indexed queue query, then none while the hint holds."""
    from sqlalchemy import event

    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if not in_a_worker():  # the server's workers (the outbox's upkeep) are not the poll's
            statements.append(statement)

    engine = server.ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert _offered(await phone.report(ios)) is None
        assert len(statements) == 1 and "command_queue" in statements[0]
        statements.clear()
        for _ in range(5):
            assert _offered(await phone.report(ios)) is None
        assert statements == []
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_a_just_queued_command_is_fetched_in_one_transaction(
    ios, phone: Phone, db: Database, server: Server
) -> None:
    """After an enqueue the next Idle poll skips the read-only look and uses one connection."""
    from sqlalchemy import event

    device_id = await device_id_of(db, phone.udid)
    assert _offered(await phone.report(ios)) is None  # the hint now says "empty"
    guid = await queue_command(db, device_id, {"RequestType": "DeviceLock"}, type_="Block")
    checkouts: list[int] = []
    pool = server.ctx.db.engine.sync_engine.pool

    def checked_out(*_args: object) -> None:
        # The requests' connections only: the server's workers (the policies' revision check every
        # half second) take connections of their own at any time.
        if not in_a_worker():
            checkouts.append(1)

    event.listen(pool, "checkout", checked_out)
    try:
        assert _offered(await phone.report(ios)) == (guid, "DeviceLock")
        assert checkouts == []  # a kept connection (SQLite: mdm.db.sqlite_direct's)
        checkouts.clear()
        # Nothing is pending any more: the next Idle looks read-only first, finds nothing, and
        # the hint answers the ones after that without the database.
        await phone.report(ios, "Acknowledged", guid)
        checkouts.clear()
        assert _offered(await phone.report(ios)) is None
        assert len(checkouts) == (1 if db.is_sqlite else 0)
        checkouts.clear()
        assert _offered(await phone.report(ios)) is None
        assert checkouts == []
    finally:
        event.remove(pool, "checkout", checked_out)


def test_queue_hint_pending_is_taken_once_and_bounded() -> None:
    from mdm.ios.state import QueueHint

    hint = QueueHint(ttl=60, size=2)
    hint.mark_empty(1, hint.generation)
    assert hint.known_empty(1) and not hint.take_pending(1)
    hint.invalidate(1)
    assert not hint.known_empty(1)
    assert hint.take_pending(1) and not hint.take_pending(1)
    for device_id in (1, 2, 3):
        hint.invalidate(device_id)
    assert not hint.take_pending(1)  # the oldest was dropped: its poll just looks first
    assert hint.take_pending(2) and hint.take_pending(3)
    hint.invalidate(4)
    hint.clear()
    assert not hint.take_pending(4)
