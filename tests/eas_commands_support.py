"""Helpers of the EAS command and policy tests: an organisation, a runner over it, the service's
EAS tables seeded from it (what discovery would have written), and waiting for commands.

The runner is ``mdm.devfakes.exchange_local.LocalOrgRunner`` when it is there; until then a
runner of the same contract (cmdlets handed to ``Organisation.execute`` in a worker thread,
error records through ``mdm.eas.faults.fault_error``). At integration the fixture switches to
the PSRP path (runner + wire fake + KDC) without touching the tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.db.models import Device, Event, Protocol, utcnow
from mdm.devfakes.exchange_org import ExchangeFault, Organisation, SessionState
from mdm.eas import cmdlets as c
from mdm.eas.cmdlets import Cmdlet, Naming
from mdm.eas.errors import ExchangeUnavailable
from mdm.eas.faults import fault_error
from mdm.eas.records import PSRecord, parse_device_statistics, parse_mailbox, parse_policy
from mdm.eas.seams import CmdletRunner, ServerHealth
from mdm.eas.tables import EasMailbox, EasPartnership, EasPolicy

PRINCIPAL = "svc-mdm@CORP.EXAMPLE.COM"


class OrgRunner:
    """``CmdletRunner`` over an in-memory organisation (the contract of ``LocalOrgRunner``)."""

    def __init__(self, org: Organisation, principal: str = PRINCIPAL) -> None:
        self.org = org
        self.principal = principal
        self.session = SessionState()

    def _one(self, cmdlet: Cmdlet) -> list[PSRecord]:
        name = cmdlet.name(self.org.naming)
        params: dict[str, Any] = dict(cmdlet.parameters_for(self.org.naming))
        params.update({s: True for s in cmdlet.switches})
        try:
            return [dict(o.properties) for o in self.org.execute(name, params, principal=self.principal,
                                                                  session=self.session)]
        except ExchangeFault as fault:
            raise fault_error(cmdlet=name, message=fault.message, error_id=fault.error_id,
                              category=fault.category, exception_type=fault.exception_type,
                              target=fault.target) from None

    async def run(self, cmdlet: Cmdlet, *, limit_seconds: float | None = None) -> list[PSRecord]:
        return await asyncio.to_thread(self._one, cmdlet)

    async def run_batch(
        self, cmdlets: Sequence[Cmdlet], *, limit_seconds: float | None = None
    ) -> list[PSRecord]:
        out: list[PSRecord] = []
        for one in cmdlets:
            out.extend(await self.run(one))
        return out

    async def naming(self) -> Naming:
        return self.org.naming

    def health(self) -> Sequence[ServerHealth]:
        return ()

    async def close(self) -> None:
        return None


def make_runner(org: Organisation, principal: str = PRINCIPAL) -> CmdletRunner:
    try:
        from mdm.devfakes.exchange_local import LocalOrgRunner  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return OrgRunner(org, principal)
    runner: CmdletRunner = LocalOrgRunner(org, principal=principal)
    return runner


class Switchable:
    """A runner whose server can be down: while ``down`` every cmdlet fails as the production
    runner reports an unreachable server after its retries (``ExchangeUnavailable``)."""

    def __init__(self, inner: CmdletRunner) -> None:
        self.inner = inner
        self.down: Exception | None = None
        self.garbage = False  # answer objects without what identifies them
        self.hold: asyncio.Event | None = None  # cmdlets wait for it (a slow server)
        self.refused = 0

    async def run(self, cmdlet: Cmdlet, *, limit_seconds: float | None = None) -> list[PSRecord]:
        if self.hold is not None:
            await self.hold.wait()
        if self.down is not None:
            self.refused += 1
            raise self.down
        out = await self.inner.run(cmdlet, limit_seconds=limit_seconds)
        return [{"Unexpected": "<html>"} for _ in out] if self.garbage else out

    async def run_batch(
        self, cmdlets: Sequence[Cmdlet], *, limit_seconds: float | None = None
    ) -> list[PSRecord]:
        if self.down is not None:
            raise self.down
        return await self.inner.run_batch(cmdlets, limit_seconds=limit_seconds)

    async def naming(self) -> Naming:
        return await self.inner.naming()

    def health(self) -> Sequence[ServerHealth]:
        return self.inner.health()

    async def close(self) -> None:
        await self.inner.close()


UNREACHABLE = ExchangeUnavailable("connection refused", server="cas1.corp.example.com")


async def seed_from_org(db: Database, runner: CmdletRunner) -> dict[str, int]:
    """Read the organisation through the runner (Get-CASMailbox, Get-…DeviceStatistics per
    mailbox, Get-…MailboxPolicy) and write it into the EAS tables and the common device list, as
    discovery does; EAS DeviceId -> device id."""
    now = utcnow()
    ids: dict[str, int] = {}
    mailboxes = [parse_mailbox(r) for r in await runner.run(c.get_cas_mailbox())]
    policies = [parse_policy(r) for r in await runner.run(c.get_policy())]
    async with db.transaction() as session:
        for mbx in mailboxes:
            row = EasMailbox(identity=mbx.identity, guid=mbx.guid, name=mbx.name,
                             display_name=mbx.display_name, primary_smtp=mbx.primary_smtp,
                             sam_account_name=mbx.sam_account_name,
                             activesync_enabled=mbx.activesync_enabled, policy=mbx.policy,
                             has_partnership=mbx.has_partnership, seen_at=now, updated_at=now)
            session.add(row)
            await session.flush()
            stats = [parse_device_statistics(r)
                     for r in await runner.run(c.get_device_statistics(mailbox=mbx.identity))]
            for st in stats:
                if st.device_id not in ids:
                    device = Device(protocol=int(Protocol.EAS), identifier=st.device_id, model=st.model,
                                    os_name=st.os, status="ok", enrolled_at=now, inventory={}, attributes={})
                    session.add(device)
                    await session.flush()
                    ids[st.device_id] = device.id
                session.add(EasPartnership(device_id=ids[st.device_id], mailbox_id=row.id,
                                           exchange_identity=st.identity, device_type=st.device_type,
                                           wipe_state=st.wipe_state.value, seen_at=now, updated_at=now))
        for policy in policies:
            session.add(EasPolicy(identity=policy.identity, name=policy.name, guid=policy.guid,
                                  is_default=policy.is_default,
                                  settings=policy.settings.model_dump(mode="json"), seen_at=now,
                                  updated_at=now))
    return ids


async def wait_command(api: httpx.AsyncClient, device_id: int, guid: str, *, done: Sequence[str] = (
        "completed", "failed"), timeout: float = 20.0) -> dict[str, Any]:
    """The command once its status is one of ``done`` (the executor ran it)."""
    deadline = time.monotonic() + timeout
    while True:
        page = (await api.get(f"/api/v1/devices/{device_id}/commands")).json()
        command = next(c for c in page["items"] if c["guid"] == guid)
        if command["status"] in done:
            return dict(command)
        if time.monotonic() > deadline:
            raise AssertionError(f"command still {command['status']}: {command}")
        await asyncio.sleep(0.05)


async def events_of(db: Database, type_name: str) -> list[dict[str, Any]]:
    async with db.session() as session:
        rows = await session.scalars(select(Event).where(Event.type == type_name).order_by(Event.id))
        return [dict(r.body or {}) | {"device_id": r.device_id} for r in rows]
