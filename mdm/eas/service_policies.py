"""ActiveSync mailbox policy management (``mdm eas policies``, ``/api/v1/eas/policies``).

Reads come from ``eas_policies`` (what discovery and this service last saw in Exchange). A change
runs synchronously through the runner (the caller waits, within the cmdlet timeout); only once
Exchange said yes is the result stored, with its event, in one transaction. An edit is re-read
with Get-… so that the stored settings are Exchange's, not the request's.

Exchange's answers become service errors (``ServiceError`` → HTTP status):
- the policy does not exist: 404; the cmdlet refused the values (duplicate name, invalid value,
  the default policy cannot be removed): 422 with Exchange's message;
- the service account may not run the cmdlet: 502 (the request was fine; our account lacks the
  right); Exchange unreachable or Kerberos failing: 503; a timeout: 504; [eas] off: 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mdm.core import events
from mdm.core.errors import NotFound, ServiceError
from mdm.db.engine import Database
from mdm.eas import cmdlets
from mdm.eas import event_types_commands as ev
from mdm.eas import store_policies as store
from mdm.eas.cmdlets import Cmdlet
from mdm.eas.errors import (
    CmdletFailed,
    CmdletNotPermitted,
    ExchangeError,
    ExchangeTimeout,
    NotConfigured,
    ObjectNotFound,
)
from mdm.eas.records import MailboxPolicy, PolicySettings, PSRecord, parse_policy
from mdm.eas.seams import CmdletRunner
from mdm.eas.tables import EasPolicy

log = logging.getLogger("mdm.eas.policies")


class ExchangeRefused(ServiceError):
    status = 422
    code = "exchange_refused"


class ExchangeNotPermitted(ServiceError):
    status = 502
    code = "exchange_not_permitted"


class ExchangeUnavailableError(ServiceError):
    status = 503
    code = "exchange_unavailable"


class ExchangeTimedOut(ServiceError):
    status = 504
    code = "exchange_timeout"


class EasDisabled(ServiceError):
    status = 503
    code = "eas_disabled"


@dataclass(frozen=True, slots=True)
class PolicyView:
    name: str
    identity: str
    guid: str | None
    is_default: bool
    settings: dict[str, Any]
    seen_at: datetime
    vanished_at: datetime | None

    @classmethod
    def of(cls, row: EasPolicy) -> PolicyView:
        return cls(row.name, row.identity, row.guid, bool(row.is_default), dict(row.settings or {}),
                   row.seen_at, row.vanished_at)


def service_error(exc: ExchangeError, what: str) -> ServiceError:
    """The service error of an Exchange failure of ``what`` (a policy operation)."""
    if isinstance(exc, ObjectNotFound):
        return NotFound(f"{what}: {exc.message}")
    if isinstance(exc, CmdletNotPermitted):
        return ExchangeNotPermitted(
            f"{what}: the service account may not run {cmdlets.logical_name(exc.cmdlet)} (it needs that "
            f"cmdlet in its Exchange management role): {exc.message}", cmdlet=exc.cmdlet)
    if isinstance(exc, CmdletFailed):
        return ExchangeRefused(f"{what}: Exchange refused it: {exc.message}", cmdlet=exc.cmdlet,
                               error_id=exc.error_id)
    if isinstance(exc, NotConfigured):
        return EasDisabled(f"{what}: {exc.message}")
    if isinstance(exc, ExchangeTimeout):
        return ExchangeTimedOut(f"{what}: Exchange did not answer in time: {exc}", reason=exc.reason)
    return ExchangeUnavailableError(f"{what}: Exchange is not available: {exc}", reason=exc.reason)


class PolicyService:
    """``runner()``: the current runner, None when [eas] is off. ``changed()``: called after each
    stored change (the translator's known policy names are refreshed)."""

    def __init__(self, db: Database, runner: Callable[[], CmdletRunner | None],
                 timeout: Callable[[], float], changed: Callable[[], Any] | None = None) -> None:
        self.db = db
        self.runner = runner
        self.timeout = timeout
        self.changed = changed

    async def all(self, *, include_vanished: bool = False) -> list[PolicyView]:
        async with self.db.session() as session:
            rows = await store.list_all(session, include_vanished=include_vanished)
        return [PolicyView.of(r) for r in rows]

    async def show(self, name: str) -> PolicyView:
        async with self.db.session() as session:
            row = await store.by_name(session, name)
        if row is None:
            raise NotFound(f"no ActiveSync mailbox policy named {name!r} is known", name=name)
        return PolicyView.of(row)

    async def _run(self, cmdlet: Cmdlet, what: str, *, op: str, name: str,
                   by: str | None) -> list[PSRecord]:
        runner = self.runner()
        if runner is None:
            raise EasDisabled("Exchange ActiveSync is not enabled on this server ([eas] enabled = false)")
        try:
            return await runner.run(cmdlet, limit_seconds=self.timeout())
        except ExchangeError as exc:
            log.warning("%s failed: %s (%s)", what, exc, exc.reason)
            await self._failed(op, name, cmdlet, exc, by)
            raise service_error(exc, what) from None

    async def _failed(self, op: str, name: str, cmdlet: Cmdlet, exc: ExchangeError,
                      by: str | None) -> None:
        """The event of a change Exchange refused or could not run (no command log holds it)."""
        try:
            async with self.db.transaction() as session:
                events.emit(session, ev.EAS_POLICY_CHANGE_FAILED, name=name, operation=op,
                            cmdlet=cmdlets.logical_name(getattr(exc, "cmdlet", None) or cmdlet.logical_name),
                            reason=exc.reason, message=exc.message, by=by)
        except Exception:  # the answer still says what happened
            log.exception("eas policy %r: could not record the failure of %s", name, op)

    async def _read(self, name: str, what: str, *, op: str, by: str | None) -> MailboxPolicy:
        out = await self._run(cmdlets.get_policy(name), what, op=op, name=name, by=by)
        policies = [parse_policy(r) for r in out]
        match = next((p for p in policies if p.name == name), policies[0] if len(policies) == 1 else None)
        if match is None:
            raise NotFound(f"{what}: Exchange does not list a policy named {name!r}")
        return match

    async def _store(self, policy: MailboxPolicy, event: Any, by: str | None) -> PolicyView:
        async with self.db.transaction() as session:
            row = await store.upsert(session, policy)
            events.emit(session, event, name=policy.name, by=by, settings=row.settings)
            view = PolicyView.of(row)
        await self._changed()
        return view

    async def _changed(self) -> None:
        if self.changed is not None:
            result = self.changed()
            if hasattr(result, "__await__"):
                await result

    async def create(self, name: str, settings: PolicySettings, *, by: str | None = None) -> PolicyView:
        what = f"creating ActiveSync mailbox policy {name!r}"
        out = await self._run(cmdlets.new_policy(name, settings.to_parameters()), what,
                              op="create", name=name, by=by)
        created = [parse_policy(r) for r in out]
        policy = created[0] if created else await self._read(name, what, op="create", by=by)
        log.info("eas policy %r created by %s", name, by)
        return await self._store(policy, ev.EAS_POLICY_CREATED, by)

    async def edit(self, name: str, settings: PolicySettings, *, by: str | None = None) -> PolicyView:
        what = f"changing ActiveSync mailbox policy {name!r}"
        params = settings.to_parameters(only_set=True)
        if params:
            await self._run(cmdlets.set_policy(name, params), what, op="edit", name=name, by=by)
        policy = await self._read(name, what, op="edit", by=by)
        log.info("eas policy %r changed by %s", name, by)
        return await self._store(policy, ev.EAS_POLICY_CHANGED, by)

    async def delete(self, name: str, *, by: str | None = None) -> None:
        what = f"deleting ActiveSync mailbox policy {name!r}"
        await self._run(cmdlets.remove_policy(name), what, op="delete", name=name, by=by)
        async with self.db.transaction() as session:
            await store.remove(session, name)
            events.emit(session, ev.EAS_POLICY_DELETED, name=name, by=by)
        log.info("eas policy %r deleted by %s", name, by)
        await self._changed()
