"""A discovery run (DESIGN §8): ActiveSync mailbox policies, mailboxes and their devices from
Exchange into the service's tables and the common device list, changes as events.

1. policies (Get-ActiveSyncMailboxPolicy), one transaction;
2. mailboxes (Get-CASMailbox -ResultSize Unlimited), written in chunks of ``chunk`` rows, one
   transaction each; only (identity, id, owner) of those with a partnership is kept;
3. devices: Get-ActiveSyncDeviceStatistics -Mailbox X, ``batch`` mailboxes per pipeline
   (``run_batch``), ``concurrency`` pipelines at once, one transaction per batch. A batch that
   writes an error record is run again one mailbox at a time: a mailbox that vanished meanwhile
   (ObjectNotFound) is simply gone, any other failure counts as a failed mailbox ("partial");
4. only after a complete run ("ok"): what was not seen in it is marked vanished, in chunks.

Exchange unreachable, refusing the credentials or answering garbage fails the run (outcome
"failed", eas_discovery_failed); nothing is marked vanished. No SQL and no HTTP here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mdm.core import events
from mdm.db.engine import Database
from mdm.db.models import utcnow
from mdm.eas import cmdlets as c
from mdm.eas import event_types as ev
from mdm.eas import store, store_devices
from mdm.eas.errors import CmdletFailed, ExchangeError, ExchangeTimeout, ObjectNotFound
from mdm.eas.records import DeviceStatistics, parse_device_statistics, parse_mailbox, parse_policy
from mdm.eas.seams import CmdletRunner
from mdm.eas.service_sync import (
    Found,
    KnownMailbox,
    device_vanished_body,
    sync_devices,
    sync_mailboxes,
    sync_policies,
)

log = logging.getLogger("mdm.eas.discovery")
DEVICES_PATH = "/ExchangeActiveSyncDevices/"
# Mailboxes or devices per write transaction. On SQLite each one holds the server's one writer
# (check-ins and command answers wait behind it): 500 mailboxes or a whole batch's ~200 devices
# held it 70-117 ms (p50), p99 200-360 ms at load 10-12; 50 rows: p50 11 ms, p99 90 ms, for
# ~40 % more CPU per discovery (per-transaction statements).
WRITE_ROWS = 50


@dataclass(slots=True)
class RunResult:
    outcome: str  # "ok" | "partial" | "failed"
    mailboxes: int = 0
    devices: int = 0
    policies: int = 0
    vanished: int = 0
    failed_mailboxes: int = 0
    duration_seconds: float = 0.0
    reason: str | None = None
    error: str | None = None

    def counts(self) -> dict[str, Any]:
        return {
            "mailboxes": self.mailboxes,
            "devices": self.devices,
            "policies": self.policies,
            "vanished": self.vanished,
            "failed_mailboxes": self.failed_mailboxes,
        }


class Discovery:
    def __init__(
        self,
        db: Database,
        runner: CmdletRunner,
        *,
        batch: int = 100,
        concurrency: int = 4,
        limit_seconds: float | None = None,
        chunk: int = 500,
        write_rows: int = WRITE_ROWS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db, self.runner = db, runner
        self.batch, self.concurrency, self.chunk = max(1, batch), max(1, concurrency), max(1, chunk)
        self.write_rows = max(1, write_rows)
        self.limit_seconds = limit_seconds
        self.clock = clock

    async def run(self, *, runner_name: str = "") -> RunResult:
        started, t0 = self.clock(), time.monotonic()
        async with self.db.transaction() as session:
            await store.begin(session, runner=runner_name, now=started)
        result = RunResult("ok")
        try:
            await self._discover(started, result)
        except ExchangeError as exc:
            result.outcome, result.reason, result.error = "failed", exc.reason, str(exc)[:1000]
        result.duration_seconds = round(time.monotonic() - t0, 3)
        async with self.db.transaction() as session:
            await store.finish(
                session, outcome=result.outcome, error=result.error, now=self.clock(), **result.counts()
            )
            if result.outcome == "failed":
                events.emit(
                    session,
                    ev.EAS_DISCOVERY_FAILED,
                    reason=result.reason or "exchange_error",
                    message=result.error or "",
                    duration_seconds=result.duration_seconds,
                )
            else:
                events.emit(
                    session,
                    ev.EAS_DISCOVERY_COMPLETED,
                    outcome=result.outcome,
                    duration_seconds=result.duration_seconds,
                    **result.counts(),
                )
        log.log(
            logging.WARNING if result.outcome != "ok" else logging.INFO,
            "eas discovery %s: %d mailboxes, %d devices, %d policies, %d vanished, %d failed, %.1f s%s",
            result.outcome,
            result.mailboxes,
            result.devices,
            result.policies,
            result.vanished,
            result.failed_mailboxes,
            result.duration_seconds,
            f" ({result.reason}: {result.error})" if result.error else "",
        )
        return result

    async def _discover(self, started: datetime, result: RunResult) -> None:
        policies = [
            parse_policy(r) for r in await self.runner.run(c.get_policy(), limit_seconds=self.limit_seconds)
        ]
        async with self.db.transaction() as session:
            await sync_policies(session, policies, started)
        result.policies = len(policies)
        records = await self.runner.run(c.get_cas_mailbox(), limit_seconds=self.limit_seconds)
        with_devices: list[KnownMailbox] = []
        for i in range(0, len(records), self.write_rows):
            mailboxes = [parse_mailbox(r) for r in records[i : i + self.write_rows]]
            async with self.db.transaction() as session:
                with_devices.extend(await sync_mailboxes(session, mailboxes, started))
                await store.progress(session, mailboxes=i + len(mailboxes), policies=result.policies)
            result.mailboxes = i + len(mailboxes)
        del records
        await self._devices(with_devices, result)
        if result.failed_mailboxes:
            result.outcome = "partial"
            result.error = f"the devices of {result.failed_mailboxes} mailbox(es) could not be read"
            return
        result.vanished = await self._vanish(started)

    async def _devices(self, mailboxes: Sequence[KnownMailbox], result: RunResult) -> None:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(batch: Sequence[KnownMailbox]) -> None:
            async with gate:
                found, failed = await self._read_batch(batch)
                result.failed_mailboxes += failed
                parts = _parts(found, self.write_rows) or [[]]
                for i, part in enumerate(parts):
                    async with self.db.transaction() as session:
                        written = await sync_devices(session, part, self.clock())
                        result.devices += written  # not `+= await`: the pipelines share the count
                        if i == len(parts) - 1:  # the progress row once per batch
                            await store.progress(
                                session, devices=result.devices, failed_mailboxes=result.failed_mailboxes
                            )

        batches = [mailboxes[i : i + self.batch] for i in range(0, len(mailboxes), self.batch)]
        tasks = [asyncio.create_task(one(b)) for b in batches]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_batch(self, batch: Sequence[KnownMailbox]) -> tuple[list[Found], int]:
        """The devices of a batch of mailboxes and how many mailboxes failed."""
        try:
            records = await self.runner.run_batch(
                [c.get_device_statistics(mailbox=m.identity) for m in batch], limit_seconds=self.limit_seconds
            )
            return _attribute(batch, [parse_device_statistics(r) for r in records]), 0
        except (CmdletFailed, ExchangeTimeout) as exc:
            if len(batch) == 1:
                return [], 0 if isinstance(exc, ObjectNotFound) else 1
            log.info(
                "eas discovery: a batch of %d mailboxes failed (%s); reading them one by one", len(batch), exc
            )
        found: list[Found] = []
        failed = 0
        for mailbox in batch:
            try:
                records = await self.runner.run(
                    c.get_device_statistics(mailbox=mailbox.identity), limit_seconds=self.limit_seconds
                )
            except ObjectNotFound:
                continue  # vanished since the mailbox pass: its partnerships vanish with the run
            except (CmdletFailed, ExchangeTimeout) as exc:
                log.warning("eas discovery: the devices of %s could not be read: %s", mailbox.identity, exc)
                failed += 1
                continue
            found.extend(Found(mailbox, parse_device_statistics(r)) for r in records)
        return found, failed

    async def _vanish(self, started: datetime) -> int:
        vanished = 0
        now = self.clock()
        while True:
            async with self.db.transaction() as session:
                rows = await store_devices.vanish_partnerships(
                    session, before=started, now=now, limit=self.chunk
                )
                for row in rows:
                    events.emit(
                        session, ev.EAS_DEVICE_VANISHED, device_id=row.device_id, **device_vanished_body(row)
                    )
            vanished += len(rows)
            if len(rows) < self.chunk:
                break
        while True:
            async with self.db.transaction() as session:
                mbx = await store.vanish_mailboxes(session, before=started, now=now, limit=self.chunk)
                for m in mbx:
                    events.emit(session, ev.EAS_MAILBOX_VANISHED, user_id=m.user_id, mailbox=m.identity)
            vanished += len(mbx)
            if len(mbx) < self.chunk:
                break
        async with self.db.transaction() as session:
            for p in await store.vanish_policies(session, before=started, now=now):
                events.emit(session, ev.EAS_POLICY_VANISHED, policy=p.name, is_default=p.is_default)
                vanished += 1
        return vanished


def _parts(found: Sequence[Found], rows: int) -> list[list[Found]]:
    """The partnerships of a batch in parts of about ``rows`` devices, each device's partnerships
    (a phone syncing two mailboxes) in one part: ``sync_devices`` decides about a device from all
    of them at once."""
    by_device: dict[str, list[Found]] = {}
    for f in found:
        by_device.setdefault(f.stats.device_id, []).append(f)
    parts: list[list[Found]] = []
    current: list[Found] = []
    for group in by_device.values():
        if current and len(current) + len(group) > rows:
            parts.append(current)
            current = []
        current.extend(group)
    if current:
        parts.append(current)
    return parts


def _attribute(batch: Sequence[KnownMailbox], stats: Sequence[DeviceStatistics]) -> list[Found]:
    """Which mailbox each device of a merged pipeline output belongs to: a partnership's identity
    is its mailbox's identity + "/ExchangeActiveSyncDevices/" + the device's name."""
    if len(batch) == 1:
        return [Found(batch[0], s) for s in stats]
    by_identity = {m.identity.lower(): m for m in batch}
    out = []
    for s in stats:
        head, sep, _ = s.identity.rpartition(DEVICES_PATH)
        mailbox = by_identity.get(head.lower()) if sep else None
        if mailbox is None:
            log.warning("eas discovery: device %s of an unknown mailbox in the batch; skipped", s.identity)
            continue
        out.append(Found(mailbox, s))
    return out
