"""ActiveSync mailbox policies through ``/api/v1/eas/policies``: created, changed and deleted in
Exchange (an in-memory organisation behind the runner seam), stored as Exchange shows them, and
Exchange's refusals mapped to precise statuses. Both database engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from eas_commands_support import PRINCIPAL, UNREACHABLE, Switchable, events_of, make_runner, seed_from_org
from sqlalchemy import select

from mdm.config import Config
from mdm.core import tokens
from mdm.db.engine import Database
from mdm.devfakes.exchange_org import Organisation
from mdm.eas.cmdlets import REQUIRED_CMDLETS, Naming
from mdm.eas.errors import ExchangeTimeout
from mdm.eas.keys_commands import EXECUTOR, RUNNER
from mdm.eas.tables import EasPolicy
from mdm.server.runtime import Server

INJECTION = "Sales 'phones'; Remove-Mailbox * # $(Get-Date)"
BASE = "/api/v1/eas/policies"


@pytest.fixture
async def eas(server: Server, db: Database) -> AsyncIterator[tuple[Organisation, Switchable]]:
    org = Organisation(naming=Naming.EXCHANGE_2013)
    org.add_policy("Existing", {"DevicePasswordEnabled": True, "MinDevicePasswordLength": 4})
    runner = Switchable(make_runner(org))
    server.ctx.services[RUNNER] = runner
    await seed_from_org(db, runner)
    await server.ctx.services[EXECUTOR].refresh_policies()
    org.calls.clear()
    yield org, runner


def _url(name: str) -> str:
    return f"{BASE}/{quote(name, safe='')}"


async def _stored(db: Database) -> dict[str, EasPolicy]:
    async with db.session() as session:
        return {p.name: p for p in (await session.scalars(select(EasPolicy))).all()}


async def test_create_show_edit_delete(
    eas: tuple[Organisation, Switchable], api: httpx.AsyncClient, db: Database
) -> None:
    org, _ = eas
    body = {"name": INJECTION, "settings": {"password_required": True, "min_password_length": 6,
                                            "inactivity_lock_seconds": 300, "camera_allowed": False}}
    r = await api.post(BASE, json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == INJECTION
    assert created["settings"]["min_password_length"] == 6 and created["settings"]["camera_allowed"] is False
    (call,) = [c for c in org.calls if c.name == "New-MobileDeviceMailboxPolicy"]
    assert call.params["Name"] == INJECTION  # a plain value, not script
    assert call.params["MaxInactivityTimeLock"] == timedelta(seconds=300)  # the 2013+ name
    policy = org.policy(INJECTION)
    assert policy is not None
    assert (await events_of(db, "eas_policy_created"))[0]["name"] == INJECTION

    r = await api.get(_url(INJECTION))
    assert r.status_code == 200 and r.json()["settings"]["password_required"] is True
    names = [p["name"] for p in (await api.get(BASE)).json()["items"]]
    assert INJECTION in names and "Existing" in names

    r = await api.patch(_url(INJECTION), json={"settings": {"min_password_length": 8}})
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["min_password_length"] == 8
    assert r.json()["settings"]["camera_allowed"] is False  # unchanged, as Exchange re-read it
    (edit,) = [c for c in org.calls if c.name == "Set-MobileDeviceMailboxPolicy"]
    assert edit.params == {"Identity": INJECTION, "MinPasswordLength": 8}
    assert (await _stored(db))[INJECTION].settings["min_password_length"] == 8
    assert [e["name"] for e in await events_of(db, "eas_policy_changed")] == [INJECTION]

    r = await api.delete(_url(INJECTION))
    assert r.status_code == 204, r.text
    assert org.policy(INJECTION) is None
    assert INJECTION not in await _stored(db)
    assert (await api.get(_url(INJECTION))).status_code == 404
    assert [e["name"] for e in await events_of(db, "eas_policy_deleted")] == [INJECTION]


async def test_exchange_refusals_map_to_precise_statuses_and_change_nothing(
    eas: tuple[Organisation, Switchable], api: httpx.AsyncClient, db: Database
) -> None:
    org, _ = eas
    before = {n: dict(p.settings) for n, p in (await _stored(db)).items()}
    r = await api.post(BASE, json={"name": "Existing", "settings": {}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange_refused", r.text
    assert "already exists" in r.text
    default = next(p.name for p in (await _stored(db)).values() if p.is_default)
    r = await api.delete(_url(default))
    assert r.status_code == 422 and "default" in r.text, r.text
    r = await api.patch(_url("Nobody"), json={"settings": {"camera_allowed": True}})
    assert r.status_code == 404, r.text
    r = await api.delete(_url("Nobody"))
    assert r.status_code == 404, r.text
    # The request itself is refused before Exchange: unknown setting, value out of range.
    r = await api.post(BASE, json={"name": "X", "settings": {"no_such_setting": 1}})
    assert r.status_code in (400, 422), r.text
    r = await api.post(BASE, json={"name": "X", "settings": {"min_password_length": 99}})
    assert r.status_code in (400, 422), r.text
    # Exchange takes an inactivity lock of 1 minute to 1 hour: more is refused here, not there.
    r = await api.post(BASE, json={"name": "X", "settings": {"inactivity_lock_seconds": 7200}})
    assert r.status_code in (400, 422), r.text
    assert not [c for c in org.calls if c.params.get("Name") == "X"]
    assert {n: dict(p.settings) for n, p in (await _stored(db)).items()} == before
    assert not await events_of(db, "eas_policy_created") and not await events_of(db, "eas_policy_deleted")


async def test_missing_rights_and_an_unreachable_exchange(
    eas: tuple[Organisation, Switchable], api: httpx.AsyncClient, db: Database
) -> None:
    org, runner = eas
    org.permissions = {PRINCIPAL: set(REQUIRED_CMDLETS) - {"New-ActiveSyncMailboxPolicy"}}
    r = await api.post(BASE, json={"name": "Sales", "settings": {}})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "exchange_not_permitted"
    assert "may not run New-ActiveSyncMailboxPolicy" in r.text
    org.permissions = None
    runner.down = UNREACHABLE
    r = await api.post(BASE, json={"name": "Sales", "settings": {}})
    assert r.status_code == 503 and r.json()["error"]["code"] == "exchange_unavailable", r.text
    runner.down = ExchangeTimeout("Set-MobileDeviceMailboxPolicy did not finish in 120 s")
    r = await api.patch(_url("Existing"), json={"settings": {"camera_allowed": False}})
    assert r.status_code == 504, r.text
    runner.down = None
    assert org.policy("Sales") is None and "Sales" not in await _stored(db)
    # Reads still work from what is stored.
    assert (await api.get(_url("Existing"))).status_code == 200


async def test_every_failure_in_exchange_is_an_event_and_changes_nothing(
    eas: tuple[Organisation, Switchable], api: httpx.AsyncClient, db: Database
) -> None:
    """A policy change is no queued command, so its error is in the answer AND in an event
    (``eas_policy_change_failed``), for a refusal (422, 404) as well as for a failure (5xx)."""
    org, runner = eas
    before = {n: dict(p.settings) for n, p in (await _stored(db)).items()}
    assert (await api.post(BASE, json={"name": "Existing", "settings": {}})).status_code == 422
    org.permissions = {PRINCIPAL: set(REQUIRED_CMDLETS) - {"Remove-ActiveSyncMailboxPolicy"}}
    assert (await api.delete(_url("Existing"))).status_code == 502
    org.permissions = None
    runner.down = UNREACHABLE
    camera_off = {"settings": {"camera_allowed": False}}
    assert (await api.patch(_url("Existing"), json=camera_off)).status_code == 503
    runner.down = None
    assert (await api.patch(_url(INJECTION), json=camera_off)).status_code == 404
    # Refused before Exchange is asked (bad input): the caller's mistake, no Exchange event.
    r = await api.post(BASE, json={"name": "X", "settings": {"min_password_length": 99}})
    assert r.status_code in (400, 422), r.text
    failed = await events_of(db, "eas_policy_change_failed")
    assert [(e["operation"], e["name"], e["reason"]) for e in failed] == [
        ("create", "Existing", "cmdlet_error"), ("delete", "Existing", "not_permitted"),
        ("edit", "Existing", "unavailable"), ("edit", INJECTION, "not_found")], failed
    assert "already exists" in failed[0]["message"]
    assert failed[1]["cmdlet"] == "Remove-ActiveSyncMailboxPolicy"
    assert "Remove-MobileDeviceMailboxPolicy" in failed[1]["message"]
    assert all(e["by"] for e in failed), failed
    assert {n: dict(p.settings) for n, p in (await _stored(db)).items()} == before
    assert org.policy("Existing") is not None


async def test_without_a_runner_changes_answer_503(server: Server, api: httpx.AsyncClient) -> None:
    assert server.ctx.services.get(RUNNER) is None
    r = await api.post(BASE, json={"name": "Sales", "settings": {}})
    assert r.status_code == 503 and r.json()["error"]["code"] == "eas_disabled", r.text
    r = await api.get(BASE)
    assert r.status_code == 200 and r.json() == {"items": []}


async def test_reading_needs_devices_read_and_changing_devices_write(
    eas: tuple[Organisation, Switchable], server: Server, db: Database, config: Config
) -> None:
    org, _ = eas
    async with db.transaction() as session:
        _, reader = await tokens.create(session, "eas-reader", ["devices:read"])
    async with httpx.AsyncClient(base_url=listener_url(server, "admin"), verify=client_ssl_context(config),
                                 headers={"Authorization": f"Bearer {reader}"}, timeout=30) as client:
        assert (await client.get(BASE)).status_code == 200
        assert (await client.get(_url("Existing"))).status_code == 200
        r = await client.post(BASE, json={"name": "Sales", "settings": {}})
        assert r.status_code == 403, r.text
        assert (await client.delete(_url("Existing"))).status_code == 403
    async with httpx.AsyncClient(base_url=listener_url(server, "admin"), verify=client_ssl_context(config),
                                 timeout=30) as anonymous:
        assert (await anonymous.get(BASE)).status_code == 401
    assert org.policy("Existing") is not None and not [c for c in org.calls if c.name.startswith("New-")]
