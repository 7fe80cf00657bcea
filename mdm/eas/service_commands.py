"""The EAS command executor: no device fetches EAS commands, the service runs them against
Exchange (DESIGN §8). It finds the due queued commands of EAS devices, takes each one (an atomic
claim, so several replicas may run executors), runs its cmdlets through the ``CmdletRunner``
OUTSIDE any database transaction, then records the outcome, the EAS state it changed and their
events in ONE transaction.

Outcomes, honestly:
- Wipe: completed "wipe requested at …": Exchange sends it at the device's next sync and keeps
  wiping at every sync until the device is removed; the partnerships are wipe ``pending`` until
  statistics show the acknowledgement (RefreshDeviceInfo or discovery).
- A transient failure (unavailable, timeout, garbage answer, after the runner's own retries), a
  Kerberos failure or no Exchange configured: the command stays queued, deferred with backoff, and
  an event says why: a wipe is never lost.
- A partnership or mailbox that no longer exists: marked vanished (+ event); the command fails
  "… no longer exists in Exchange" when nothing was left to act on.
- Not permitted / an error record: failed with the cmdlet and Exchange's message (+ event).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from mdm.core import commands, events, store_due
from mdm.db.engine import Database
from mdm.db.models import Command, CommandStatus, Protocol, utcnow
from mdm.eas import cmdlets
from mdm.eas import event_types_commands as ev
from mdm.eas import store_commands as store
from mdm.eas.commands import Plan, Step, plan_for
from mdm.eas.config import EasConfig
from mdm.eas.errors import CmdletFailed, CmdletNotPermitted, ExchangeAuthError, ExchangeError, ObjectNotFound
from mdm.eas.records import parse_device_statistics
from mdm.eas.seams import CmdletRunner

log = logging.getLogger("mdm.eas.commands")
LEASE = timedelta(minutes=5)
# Errors that end the command (anything else keeps it queued).
_FINAL = (CmdletFailed, CmdletNotPermitted)


class CommandExecutor:
    """Runs queued EAS commands. ``runner()`` gives the current runner (None: [eas] is off or not
    connected yet; the commands wait). ``wake()`` (the EAS pusher) starts a pass at once."""

    def __init__(self, db: Database, runner: Callable[[], CmdletRunner | None],
                 config: Callable[[], EasConfig]) -> None:
        self.db = db
        self.runner = runner
        self.config = config
        self.woken = asyncio.Event()
        self.known_policies: frozenset[str] | None = None
        self.batch = 100

    def wake(self) -> None:
        self.woken.set()

    async def refresh_policies(self) -> None:
        async with self.db.session() as session:
            self.known_policies = await store.policy_names(session)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.refresh_policies()
                await self.drain()
            except Exception:  # a database hiccup: log, try again at the next poll
                log.exception("eas command executor pass failed; retrying")
            try:
                await asyncio.wait_for(self.woken.wait(), self.config().command_poll_seconds)
            except TimeoutError:
                pass
            self.woken.clear()

    async def drain(self) -> int:
        """Run due commands in bounded batches until none is due; the number run."""
        runner = self.runner()
        if runner is None:
            return 0
        done = 0
        limit = asyncio.Semaphore(max(1, self.config().concurrency))

        async def one(command_id: int) -> None:
            async with limit:
                try:
                    await self.execute(runner, command_id)
                except Exception:
                    # Nothing was recorded (the outcome's transaction rolled back): the command
                    # stays queued and is tried again after the backoff, never lost.
                    log.exception("eas command %d: its run broke; it stays queued", command_id)
                    await self._release(command_id)

        while True:
            async with self.db.session() as session:
                due = await store_due.due_commands(session, Protocol.EAS, self.batch)
            if not due:
                return done
            async with asyncio.TaskGroup() as group:
                for command_id, _ in due:
                    group.create_task(one(command_id))
            done += len(due)

    async def _release(self, command_id: int) -> None:
        try:
            async with self.db.transaction() as session:
                await store_due.release(session, command_id, utcnow() + self._retry_delay(1))
        except Exception:  # the lease expires and another pass takes it
            log.exception("eas command %d: could not release it; its lease will expire", command_id)

    async def execute(self, runner: CmdletRunner, command_id: int) -> None:
        async with self.db.transaction() as session:
            if not await store_due.take(session, command_id, utcnow() + LEASE):
                return
            command = await commands.claim(session, command_id)
            if command is None:
                return
            await commands.delivered(session, command)
            identifier = await store.device_identifier(session, command.device_id) or str(command.device_id)
            plan = plan_for(command.payload, command.type, await store.targets(session, command.device_id))
            # Held while its cmdlets may run (each within the cmdlet timeout), with room to spare.
            hold = timedelta(seconds=self.config().cmdlet_timeout_seconds * 2 * (len(plan.steps) + 1))
            await store_due.extend(session, command_id, utcnow() + max(LEASE, hold))
            guid, device_id, ctype, attempts = command.guid, command.device_id, command.type, command.attempts
        results = await self._run(runner, plan)
        async with self.db.transaction() as session:
            command = await commands.lock_by_guid(session, guid)
            if command is None or CommandStatus(command.status) in commands.FINAL_STATUSES:
                return
            await self._record(session, command, plan, results, identifier, attempts)
        log.info("eas command %s %s on device %d: %s", ctype, guid, device_id, plan.op)

    async def _run(self, runner: CmdletRunner, plan: Plan) -> list[tuple[Step, Any]]:
        """Each step's output records, or the ExchangeError it raised. A transient or
        authentication failure stops the run (the rest would fail the same way)."""
        results: list[tuple[Step, Any]] = []
        limit = self.config().cmdlet_timeout_seconds
        for step in plan.steps:
            try:
                out: Any = await runner.run(step.cmdlet, limit_seconds=limit)
                if plan.op == "refresh":  # a garbage answer is a protocol error, as any other
                    out = [parse_device_statistics(rec) for rec in out]
            except ExchangeError as exc:
                out = exc
            results.append((step, out))
            if isinstance(out, ExchangeError) and not isinstance(out, _FINAL):
                break
        return results

    def _retry_delay(self, attempts: int) -> timedelta:
        cfg = self.config()
        seconds = cfg.backoff_initial_seconds * 2 ** max(0, attempts - 1)
        return timedelta(seconds=min(cfg.backoff_max_seconds, seconds))

    async def _record(self, session: Any, command: Command, plan: Plan, results: list[tuple[Step, Any]],
                      identifier: str, attempts: int) -> None:
        now = utcnow()
        common: dict[str, Any] = {"identifier": identifier, "command": command.guid}
        stop = next((out for _, out in results
                     if isinstance(out, ExchangeError) and not isinstance(out, _FINAL)), None)
        ok = [step for step, out in results if not isinstance(out, ExchangeError)]
        vanished = [(step, out) for step, out in results if _target_gone(plan, step, out)]
        refused = [(step, out) for step, out in results
                   if isinstance(out, _FINAL) and not _target_gone(plan, step, out)]
        for step, exc in vanished:
            if step.kind == "partnership":
                marked = await store.mark_partnership_vanished(session, step.target, now)
            else:
                marked = await store.mark_mailbox_vanished(session, step.target, now)
            if marked:
                events.emit(session, ev.EAS_COMMAND_TARGET_VANISHED, device_id=command.device_id, **common,
                            kind=step.kind, exchange_identity=step.target, message=exc.message)
        await self._apply(session, command, plan, ok, results, common, now)
        if stop is not None and command.status == CommandStatus.REMOVING.value and not ok:
            # Recalled while it ran, and Exchange never took it: the recall wins.
            await store.finish_recalled(session, command, f"recalled; Exchange was not reached ({stop})")
            return
        if stop is not None:
            delay = self._retry_delay(attempts)
            retry_at = now + delay
            what = ("Kerberos authentication failed" if isinstance(stop, ExchangeAuthError)
                    else "Exchange unavailable")
            detail = f"{what}: {stop}; retrying at {retry_at.isoformat()}"
            await commands.defer(session, command, delay, detail)
            events.emit(session, ev.EAS_COMMAND_DEFERRED, device_id=command.device_id, **common,
                        command_type=command.type, reason=stop.reason, message=str(stop),
                        retry_at=retry_at.isoformat())
            return
        for _, refusal in refused:
            events.emit(session, ev.EAS_COMMAND_REFUSED, device_id=command.device_id, **common,
                        command_type=command.type, cmdlet=refusal.cmdlet, reason=refusal.reason,
                        message=_refusal(refusal))
        success, info = plan.summary(ok, vanished, refused, now)
        await commands.complete(session, command, success=success, info=info,
                                data={"cmdlets": [s.cmdlet.describe() for s, _ in results]})

    async def _apply(self, session: Any, command: Command, plan: Plan, ok: list[Step],
                     results: list[tuple[Step, Any]], common: dict[str, Any], now: datetime) -> None:
        """The EAS state the successful steps changed, and its events."""
        device_id = command.device_id
        if not ok:
            return
        if plan.op == "wipe":
            identities = [s.target for s in ok]
            await store.mark_wipe_requested(session, device_id, identities, now)
            events.emit(session, ev.EAS_WIPE_REQUESTED, device_id=device_id, **common,
                        partnerships=identities, requested_at=now.isoformat())
        elif plan.op == "remove":
            others = await store.end_device(session, device_id, command.id, now)
            for other in others:
                await commands.complete(session, other, success=False, info="the device was removed")
            events.emit(session, ev.EAS_DEVICE_REMOVED, device_id=device_id, **common,
                        partnerships=[s.target for s in ok], commands_failed=len(others))
        elif plan.op in ("activesync", "policy"):
            for step in ok:
                await store.set_mailbox(session, step.target, activesync_enabled=plan.enabled,
                                        policy=plan.policy)
                events.emit(session, ev.EAS_MAILBOX_CHANGED, device_id=device_id, **common,
                            mailbox=step.target, activesync_enabled=plan.enabled, policy=plan.policy)
        elif plan.op == "refresh":
            identifier = common["identifier"]
            stats = [st for step, out in results if step in ok for st in out]
            mine = [s for s in stats if s.device_id == identifier]
            for st in await store.apply_statistics(session, device_id, mine, now):
                events.emit(session, ev.EAS_WIPE_ACKNOWLEDGED, device_id=device_id, identifier=identifier,
                            partnership=st.identity,
                            acknowledged_at=(st.wipe_acknowledged or now).isoformat())
            seen = {s.identity for s in mine}
            for target in plan.partnerships:
                if target not in seen and await store.mark_partnership_vanished(session, target, now):
                    events.emit(session, ev.EAS_COMMAND_TARGET_VANISHED, device_id=device_id, **common,
                                kind="partnership", exchange_identity=target,
                                message="Get-ActiveSyncDeviceStatistics no longer lists it")


def _target_gone(plan: Plan, step: Step, out: Any) -> bool:
    """Is ``out`` the error of the step's own target (the partnership or mailbox) no longer
    existing? An object not found that names something else (the policy of AssignEasPolicy) is
    a refusal of the command, not a vanished target."""
    if not isinstance(out, ObjectNotFound):
        return False
    if out.target:
        return out.target.strip().lower() == step.target.strip().lower()
    return not (plan.policy and plan.policy in out.message and step.target not in out.message)


def _refusal(exc: ExchangeError) -> str:
    if isinstance(exc, CmdletNotPermitted):
        return (f"the service account may not run {cmdlets.logical_name(exc.cmdlet)} (it needs that cmdlet "
                f"in its Exchange management role): {exc.message}")
    return exc.message
