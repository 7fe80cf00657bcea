"""EAS commands end to end: sent through the admin API (one device, bulk) and the CLI, run by the
executor against an in-memory Exchange organisation, and shown honestly in the command log, the
EAS tables and the events. Both database engines (MDM_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from eas_commands_support import (
    PRINCIPAL,
    UNREACHABLE,
    Switchable,
    events_of,
    make_runner,
    seed_from_org,
    wait_command,
)
from sqlalchemy import select

from mdm.core import store_due
from mdm.db.engine import Database
from mdm.db.models import Device, Protocol
from mdm.devfakes.exchange_org import ExchangeFault, Organisation
from mdm.eas.cmdlets import REQUIRED_CMDLETS, Naming
from mdm.eas.errors import ExchangeAuthError, ExchangeTimeout
from mdm.eas.keys_commands import EXECUTOR, RUNNER
from mdm.eas.tables import EasMailbox, EasPartnership
from mdm.server.runtime import Server

INJECTION = "x'; Remove-Mailbox -Identity * -Confirm:$false # $(Get-Date) `\"; ;"
PHONE, ANDROID, TWO = "ApplF4KX31N2", "androidc1234567", "ApplTWOACCT9"


@pytest.fixture
def extra_config() -> str:
    return ("[eas]\ncommand_poll_seconds = 0.2\nbackoff_initial_seconds = 0.2\n"
            "backoff_max_seconds = 0.4\n")


@dataclass
class Env:
    org: Organisation
    runner: Switchable
    ids: dict[str, int]
    server: Server


@pytest.fixture
def org() -> Organisation:
    org = Organisation(naming=Naming.EXCHANGE_2013)
    org.add_policy("Sales phones")
    org.add_policy(INJECTION)
    alice = org.add_mailbox("alice")
    org.add_device(alice, PHONE)
    bob = org.add_mailbox("bob")
    org.add_device(bob, ANDROID, device_type="Android", model="SM-G991B", os="Android 14")
    carol = org.add_mailbox("carol")
    org.add_device(carol, TWO)
    org.add_device(alice, TWO)
    odd = org.add_mailbox(INJECTION[:60].replace("/", ""))
    org.add_device(odd, "ApplODDNAME1")
    return org


@pytest.fixture
async def eas(server: Server, org: Organisation, db: Database) -> AsyncIterator[Env]:
    runner = Switchable(make_runner(org))
    server.ctx.services[RUNNER] = runner
    ids = await seed_from_org(db, runner)
    await server.ctx.services[EXECUTOR].refresh_policies()
    org.calls.clear()
    yield Env(org, runner, ids, server)


async def _send(
    api: httpx.AsyncClient, device_id: int, type_: str, args: dict[str, object] | None = None
) -> str:
    r = await api.post(f"/api/v1/devices/{device_id}/commands", json={"type": type_, "args": args or {}})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["guid"])


async def _partnerships(db: Database, device_id: int) -> list[EasPartnership]:
    async with db.session() as session:
        rows = await session.scalars(select(EasPartnership).where(EasPartnership.device_id == device_id)
                                     .order_by(EasPartnership.mailbox_id))
        return list(rows.all())


async def _device(db: Database, device_id: int) -> Device:
    async with db.session() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        return device


async def test_wipe_then_sync_then_refresh_shows_the_acknowledged_wipe(
    eas: Env, api: httpx.AsyncClient, db: Database
) -> None:
    device_id = eas.ids[PHONE]
    (partnership,) = await _partnerships(db, device_id)
    command = await wait_command(api, device_id, await _send(api, device_id, "Wipe"))
    assert command["status"] == "completed", command
    assert "wipe requested at" in command["result_info"]
    assert "keeps wiping the device at every sync until it is removed" in command["result_info"]
    clears = [c for c in eas.org.calls if c.name == "Clear-MobileDevice"]
    assert [c.params for c in clears] == [{"Identity": partnership.exchange_identity, "Confirm": False}]
    assert eas.org.device(partnership.exchange_identity).wipe_requested is not None  # type: ignore[union-attr]
    (after,) = await _partnerships(db, device_id)
    assert after.wipe_state == "pending" and after.wipe_requested_at is not None
    assert [e["identifier"] for e in await events_of(db, "eas_wipe_requested")] == [PHONE]
    assert (await _device(db, device_id)).status == "ok"  # requested, not yet done

    # The phone syncs: Exchange sends the wipe, the phone acknowledges; a refresh shows it.
    assert eas.org.device_syncs(PHONE) == 1
    refresh = await wait_command(api, device_id, await _send(api, device_id, "RefreshDeviceInfo"))
    assert refresh["status"] == "completed", refresh
    (acked,) = await _partnerships(db, device_id)
    assert acked.wipe_state == "acknowledged" and acked.wipe_acknowledged_at is not None
    assert (await _device(db, device_id)).status == "wiped"
    assert [e["identifier"] for e in await events_of(db, "eas_wipe_acknowledged")] == [PHONE]
    # Exchange still lists it (and would wipe it again) until it is removed.
    assert eas.org.device(partnership.exchange_identity) is not None

    removed = await wait_command(api, device_id, await _send(api, device_id, "Remove"))
    assert removed["status"] == "completed", removed
    assert eas.org.device(partnership.exchange_identity) is None
    assert (await _device(db, device_id)).status == "unmanaged"
    assert [e["identifier"] for e in await events_of(db, "eas_device_removed")] == [PHONE]


async def test_a_phone_with_two_accounts_is_wiped_on_both_partnerships(
    eas: Env, api: httpx.AsyncClient, db: Database
) -> None:
    device_id = eas.ids[TWO]
    rows = await _partnerships(db, device_id)
    assert len(rows) == 2
    command = await wait_command(api, device_id, await _send(api, device_id, "Wipe"))
    assert command["status"] == "completed" and "on 2 partnership(s)" in command["result_info"]
    for row in rows:
        assert eas.org.device(row.exchange_identity).wipe_requested is not None  # type: ignore[union-attr]
    assert {r.wipe_state for r in await _partnerships(db, device_id)} == {"pending"}


async def test_disable_and_enable_activesync_and_assign_a_policy(
    eas: Env, api: httpx.AsyncClient, db: Database
) -> None:
    device_id = eas.ids[ANDROID]
    (row,) = await _partnerships(db, device_id)
    async with db.session() as session:
        mailbox = await session.get(EasMailbox, row.mailbox_id)
        assert mailbox is not None
        identity = mailbox.identity
    command = await wait_command(api, device_id, await _send(api, device_id, "DisableActiveSync"))
    assert command["status"] == "completed" and "ActiveSync disabled" in command["result_info"]
    assert eas.org.mailbox(identity).activesync_enabled is False  # type: ignore[union-attr]
    calls = [c.params for c in eas.org.calls if c.name == "Set-CASMailbox"]
    assert calls == [{"Identity": identity, "ActiveSyncEnabled": False}]
    async with db.session() as session:
        assert (await session.get(EasMailbox, row.mailbox_id)).activesync_enabled is False  # type: ignore[union-attr]
    command = await wait_command(api, device_id, await _send(api, device_id, "EnableActiveSync"))
    assert command["status"] == "completed"
    assert eas.org.mailbox(identity).activesync_enabled is True  # type: ignore[union-attr]

    command = await wait_command(api, device_id, await _send(api, device_id, "AssignEasPolicy",
                                                             {"policy": "Sales phones"}))
    assert command["status"] == "completed", command
    assert eas.org.mailbox(identity).policy == "Sales phones"  # type: ignore[union-attr]
    async with db.session() as session:
        assert (await session.get(EasMailbox, row.mailbox_id)).policy == "Sales phones"  # type: ignore[union-attr]
    changed = await events_of(db, "eas_mailbox_changed")
    assert [(e["activesync_enabled"], e["policy"]) for e in changed] == [(False, None), (True, None),
                                                                         (None, "Sales phones")]


async def test_an_unknown_policy_is_refused_at_enqueue(eas: Env, api: httpx.AsyncClient) -> None:
    device_id = eas.ids[ANDROID]
    r = await api.post(f"/api/v1/devices/{device_id}/commands",
                       json={"type": "AssignEasPolicy", "args": {"policy": "No such policy"}})
    assert r.status_code == 422, r.text
    assert "No such policy" in r.text
    r = await api.post(f"/api/v1/devices/{device_id}/commands",
                       json={"type": "AssignEasPolicy", "args": {"policy": "Sales phones", "extra": 1}})
    assert r.status_code == 422, r.text
    assert not [c for c in eas.org.calls if c.name == "Set-CASMailbox"]


async def test_a_policy_that_vanished_after_enqueue_fails_with_exchanges_message(
    eas: Env, api: httpx.AsyncClient, db: Database
) -> None:
    device_id = eas.ids[ANDROID]
    with eas.org.lock:
        store = eas.org.store
        store.remove_policy(store.find_policy("Remove-MobileDeviceMailboxPolicy", "Sales phones"))
    command = await wait_command(api, device_id, await _send(api, device_id, "AssignEasPolicy",
                                                             {"policy": "Sales phones"}))
    assert command["status"] == "failed", command
    assert "Sales phones" in command["result_info"]
    assert await events_of(db, "eas_command_refused")


async def test_values_with_quotes_semicolons_and_subexpressions_reach_exchange_verbatim(
    eas: Env, api: httpx.AsyncClient, db: Database
) -> None:
    device_id = eas.ids["ApplODDNAME1"]
    (row,) = await _partnerships(db, device_id)
    command = await wait_command(api, device_id, await _send(api, device_id, "AssignEasPolicy",
                                                             {"policy": INJECTION}))
    assert command["status"] == "completed", command
    (call,) = [c for c in eas.org.calls if c.name == "Set-CASMailbox"]
    async with db.session() as session:
        mailbox = await session.get(EasMailbox, row.mailbox_id)
        assert mailbox is not None
    assert call.params == {"Identity": mailbox.identity, "ActiveSyncMailboxPolicy": INJECTION}
    assert "'" in mailbox.identity and ";" in mailbox.identity
    assert eas.org.mailbox(mailbox.identity).policy == INJECTION  # type: ignore[union-attr]
    assert eas.org.mailbox(mailbox.identity) is not None  # nothing was removed


async def test_a_device_that_vanished_since_discovery_fails_and_is_marked(
    eas: Env, api: httpx.AsyncClient, db: Database
) -> None:
    device_id = eas.ids[PHONE]
    (row,) = await _partnerships(db, device_id)
    assert eas.org.drop_device(row.exchange_identity)
    command = await wait_command(api, device_id, await _send(api, device_id, "Wipe"))
    assert command["status"] == "failed", command
    assert "no longer exists in Exchange" in command["result_info"]
    (after,) = await _partnerships(db, device_id)
    assert after.vanished_at is not None and after.wipe_state == "none"
    (event,) = await events_of(db, "eas_command_target_vanished")
    assert event["exchange_identity"] == row.exchange_identity
    again = await wait_command(api, device_id, await _send(api, device_id, "Wipe"))
    assert again["status"] == "failed" and "no ActiveSync partnership left" in again["result_info"]


_DOWN: dict[str, Exception] = {
    "unavailable": UNREACHABLE,
    "auth_failed": ExchangeAuthError("Kerberos: the KDC for CORP.EXAMPLE.COM cannot be reached"),
    "timeout": ExchangeTimeout("Clear-MobileDevice did not finish in time; its pipeline was stopped"),
}


@pytest.mark.parametrize("failure", list(_DOWN))
async def test_exchange_down_defers_the_wipe_which_runs_after_recovery(
    eas: Env, api: httpx.AsyncClient, db: Database, failure: str
) -> None:
    device_id = eas.ids[PHONE]
    eas.runner.down = _DOWN[failure]
    guid = await _send(api, device_id, "Wipe")
    deferred = await wait_command(api, device_id, guid, done=("processing",), timeout=5)
    for _ in range(100):
        if await events_of(db, "eas_command_deferred"):
            break
        await asyncio.sleep(0.05)
    (event, *_) = await events_of(db, "eas_command_deferred")
    assert event["reason"] == failure and event["command"] == guid, event
    page = (await api.get(f"/api/v1/devices/{device_id}/commands")).json()
    journal = next(c for c in page["items"] if c["guid"] == guid)["journal"] or []
    assert deferred["status"] == "processing"
    assert any("retrying at" in (j["detail"] or "") for j in journal), journal
    assert not [c for c in eas.org.calls if c.name == "Clear-MobileDevice"]
    eas.runner.down = None
    done = await wait_command(api, device_id, guid)
    assert done["status"] == "completed", done
    assert len([c for c in eas.org.calls if c.name == "Clear-MobileDevice"]) == 1


async def test_a_cmdlet_the_account_may_not_run_fails_naming_it(
    eas: Env, api: httpx.AsyncClient, db: Database
) -> None:
    eas.org.permissions = {PRINCIPAL: set(REQUIRED_CMDLETS) - {"Clear-ActiveSyncDevice"}}
    device_id = eas.ids[PHONE]
    command = await wait_command(api, device_id, await _send(api, device_id, "Wipe"))
    assert command["status"] == "failed", command
    assert "Clear-MobileDevice" in command["result_info"]
    (event,) = await events_of(db, "eas_command_refused")
    assert event["reason"] == "not_permitted" and "may not run Clear-ActiveSyncDevice" in event["message"]


async def test_an_error_record_fails_the_command_with_its_message(
    eas: Env, api: httpx.AsyncClient, db: Database
) -> None:
    eas.org.inject("Set-CASMailbox", ExchangeFault(
        "The operation couldn't be performed because 'bob' couldn't be written.", error_id="2D1AE9AC,Set",
        category="WriteError", exception_type="Microsoft.Exchange.Data.Directory.ADOperationException"))
    device_id = eas.ids[ANDROID]
    command = await wait_command(api, device_id, await _send(api, device_id, "DisableActiveSync"))
    assert command["status"] == "failed", command
    assert "couldn't be written" in command["result_info"]
    async with db.session() as session:
        (row,) = await _partnerships(db, device_id)
        assert (await session.get(EasMailbox, row.mailbox_id)).activesync_enabled is True  # type: ignore[union-attr]
    # The error is in the events too, with the cmdlet and Exchange's message.
    (event,) = await events_of(db, "eas_command_refused")
    assert (event["reason"], event["cmdlet"]) == ("cmdlet_error", "Set-CASMailbox"), event
    assert "couldn't be written" in event["message"] and event["command"] == command["guid"]
    assert not await events_of(db, "eas_mailbox_changed")


@pytest.mark.parametrize("trouble", ["garbage", "broken"])
async def test_a_garbage_answer_or_a_broken_run_keeps_the_command_queued(
    eas: Env, api: httpx.AsyncClient, db: Database, trouble: str
) -> None:
    device_id = eas.ids[PHONE]
    if trouble == "garbage":
        eas.runner.garbage = True
    else:
        eas.runner.down = RuntimeError("a bug in the runner")
    guid = await _send(api, device_id, "RefreshDeviceInfo")
    for _ in range(100):
        page = (await api.get(f"/api/v1/devices/{device_id}/commands")).json()
        command = next(c for c in page["items"] if c["guid"] == guid)
        if command["attempts"] >= 2:
            break
        await asyncio.sleep(0.05)
    assert command["status"] == "processing" and command["attempts"] >= 2, command
    if trouble == "garbage":
        (event, *_) = await events_of(db, "eas_command_deferred")
        assert event["reason"] == "bad_response"
    eas.runner.garbage, eas.runner.down = False, None
    done = await wait_command(api, device_id, guid)
    assert done["status"] == "completed", done
    (row,) = await _partnerships(db, device_id)
    assert row.vanished_at is None and row.last_sync is not None


async def test_a_wipe_recalled_while_exchange_is_down_ends_removed(
    eas: Env, api: httpx.AsyncClient, db: Database
) -> None:
    device_id = eas.ids[PHONE]
    eas.runner.hold, eas.runner.down = asyncio.Event(), UNREACHABLE
    guid = await _send(api, device_id, "Wipe")
    for _ in range(100):
        page = (await api.get(f"/api/v1/devices/{device_id}/commands")).json()
        if next(c for c in page["items"] if c["guid"] == guid)["attempts"] >= 1:
            break
        await asyncio.sleep(0.05)
    r = await api.delete(f"/api/v1/commands/{guid}")
    assert r.status_code == 200 and r.json()["status"] == "removing", r.text
    eas.runner.hold.set()
    done = await wait_command(api, device_id, guid, done=("removed", "remove_failed", "completed", "failed"))
    assert done["status"] == "removed", done
    eas.runner.down = None
    await asyncio.sleep(0.5)  # a few executor passes: nothing runs it again
    assert not [c for c in eas.org.calls if c.name == "Clear-MobileDevice"]
    async with db.session() as session:
        assert (await store_due.due_commands(session, Protocol.EAS, 10)) == []


async def test_a_mailbox_that_vanished_since_discovery_fails_the_command_and_is_marked(
    eas: Env, api: httpx.AsyncClient, db: Database
) -> None:
    """Discovery saw bob's mailbox; it is deleted in Exchange before DisableActiveSync runs."""
    device_id = eas.ids[ANDROID]
    (row,) = await _partnerships(db, device_id)
    async with db.session() as session:
        mailbox = await session.get(EasMailbox, row.mailbox_id)
        assert mailbox is not None
        identity = mailbox.identity
    assert eas.org.drop_mailbox(identity)
    guid = await _send(api, device_id, "DisableActiveSync")
    command = await wait_command(api, device_id, guid)
    assert command["status"] == "failed", command
    assert f"mailbox {identity!r} no longer exists in Exchange" in command["result_info"], command
    async with db.session() as session:
        after = await session.get(EasMailbox, row.mailbox_id)
        assert after is not None and after.vanished_at is not None
        assert after.activesync_enabled is True  # nothing was changed
    (event,) = await events_of(db, "eas_command_target_vanished")
    assert (event["kind"], event["exchange_identity"], event["command"]) == ("mailbox", identity, guid)
    assert not await events_of(db, "eas_mailbox_changed")
    assert [c.name for c in eas.org.calls] == ["Set-CASMailbox"]  # tried once, not retried
