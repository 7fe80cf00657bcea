"""The server's side of the push worker processes (``[push] worker = "process"``, ``workers =
N``): starts them, hands each the configuration, restarts each with back-off when it ends,
restarts them when ``mdm reload`` changed what they were started with, stops them with the server
(SIGTERM, then SIGKILL), and shows what they report, summed (``dispatcher.stats`` of the server's
dispatcher, the push metrics in ``/metrics``).

Several workers (PostgreSQL only) share the owed rows through the take's ``FOR UPDATE SKIP
LOCKED``; each runs with its part of ``push.repush_per_second`` (``PushConfig.worker_share``). A
wake-up a worker had leased when it died is sent by any worker once its lease ends
(``push.lease_seconds``); the others are rows in ``push_wakeups`` and wait for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mdm.core.metrics import REGISTRY
from mdm.push import metrics
from mdm.push.assembly import Handoff
from mdm.push.config import push_config
from mdm.push.dispatcher import PushDispatcher
from mdm.push.worker_channel import PREFIX, MirroredMetrics, WorkerView, parse
from mdm.push.worker_process import encode_settings, encode_start, start_without_hot_keys
from mdm.server.context import ServerContext

log = logging.getLogger("mdm.push")

HEALTHY_SECONDS = 60.0  # a worker that ran this long starts the back-off again at its minimum


@dataclass(frozen=True)
class WorkerCommand:
    """How the server starts its push worker (composed in ``mdm.plugins``)."""

    argv: Sequence[str]
    handoff: Handoff | None = None


@dataclass
class WorkerSlot:
    """One of the ``push.workers`` worker processes the server keeps running."""

    index: int
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    sent_start: bytes | None = None
    restart: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerSupervisor:
    def __init__(
        self, ctx: ServerContext, dispatcher: PushDispatcher, command: WorkerCommand, *,
        stop_grace: float = 10.0, min_backoff: float = 1.0, max_backoff: float = 60.0,
    ) -> None:
        self.ctx = ctx
        self.dispatcher = dispatcher
        self.command = command
        self.stop_grace = stop_grace
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.view = WorkerView()
        self.slots: list[WorkerSlot] = []
        self._resize = asyncio.Event()
        self._unregistered: list[object] = []
        self._mirror: MirroredMetrics | None = None

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        """The first worker process (the only one with ``push.workers = 1``)."""
        return self.slots[0].process if self.slots else None

    @property
    def starts(self) -> int:
        return sum(slot.starts for slot in self.slots)

    def processes(self) -> list[asyncio.subprocess.Process]:
        return [slot.process for slot in self.slots if slot.process is not None]

    # ---- the server's workers -------------------------------------------------------------------
    async def run(self) -> None:
        """Keep ``push.workers`` worker processes running until cancelled (the server stops); a
        reload that changes their number starts them all again."""
        self._mirror_metrics()
        try:
            while True:
                self._resize.clear()
                self.slots = [WorkerSlot(i) for i in range(push_config(self.ctx.config).workers)]
                tasks = [asyncio.create_task(self._keep(slot)) for slot in self.slots]
                try:
                    await self._resize.wait()
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    await self.stop()
                    for slot in self.slots:
                        self.view.worker_ended(slot.index)
                    self.view.apply(self.dispatcher.stats)
        finally:
            self._unmirror_metrics()

    async def _keep(self, slot: WorkerSlot) -> None:
        """One slot's worker: started again with back-off whenever it ends."""
        backoff: float | None = None  # (None: min_backoff, read when needed)
        while True:
            began = time.monotonic()
            try:
                status = await self._run_once(slot)
            except OSError as exc:  # the interpreter cannot be started: try again later
                log.error("push: the worker process cannot be started: %s", exc)
                status = None
            self.view.worker_ended(slot.index)
            self.view.apply(self.dispatcher.stats)
            if slot.restart.is_set():
                slot.restart.clear()
                backoff = None
                continue
            if backoff is None or time.monotonic() - began > HEALTHY_SECONDS:
                backoff = self.min_backoff
            log.warning("push: worker process %d ended (exit status %s); starting it again in %.0fs",
                        slot.index, status, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.restart.wait(), backoff)
            slot.restart.clear()
            backoff = min(backoff * 2, self.max_backoff)

    async def _run_once(self, slot: WorkerSlot) -> int | None:
        start = encode_start(self.ctx.config, self._handoff())
        process = await asyncio.create_subprocess_exec(
            *self.command.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        slot.process, slot.sent_start = process, start
        slot.starts += 1
        log.info("push: worker process %d started (pid %d)", slot.index, process.pid)
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(start)
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while line := await process.stdout.readline():
                snap = parse(line)
                if snap is not None:
                    self.view.take(snap, slot.index)
                    self.view.apply(self.dispatcher.stats)
            return await self._reap(process)
        except asyncio.CancelledError:
            await self._stop_one(process)
            raise

    async def _reap(self, process: asyncio.subprocess.Process) -> int:
        """Wait for a process whose stdout ended; SIGTERM then SIGKILL if it lingers."""
        try:
            async with asyncio.timeout(self.stop_grace):
                return await process.wait()
        except TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(self.stop_grace):
                return await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return await process.wait()

    def _handoff(self) -> dict[str, object]:
        return dict(self.command.handoff(self.ctx)) if self.command.handoff is not None else {}

    # ---- reload and stop ------------------------------------------------------------------------
    def restart_if_changed(self) -> bool:
        """After ``mdm reload``: a change of the dispatcher's hot ``[push]`` keys only
        (``HOT_KEYS``: the re-push rate, batch size, ...) is handed to the running workers on their
        stdin; workers started with another configuration or identity otherwise are restarted
        (they read both only when they start); another number of workers (``push.workers``)
        starts them all again."""
        if not self.slots:
            return False
        if push_config(self.ctx.config).workers != len(self.slots):
            log.info("push: push.workers changed; starting %d worker process(es)",
                     push_config(self.ctx.config).workers)
            self._resize.set()
            return True
        start = encode_start(self.ctx.config, self._handoff())
        changed = [slot for slot in self.slots if slot.process is not None and slot.sent_start != start]
        hot = start_without_hot_keys(start)
        told = [slot for slot in changed if slot.sent_start is not None
                and start_without_hot_keys(slot.sent_start) == hot and self._tell(slot)]
        for slot in told:
            slot.sent_start = start
        restart = [slot for slot in changed if slot not in told]
        if told:
            log.info("push: the worker process(es) took the new [push] settings")
        if not restart:
            return False
        log.info("push: the configuration or the push identity changed; restarting the worker process(es)")
        for slot in restart:
            slot.restart.set()
            with contextlib.suppress(ProcessLookupError):
                slot.process.terminate()  # type: ignore[union-attr]
        return True

    def _tell(self, slot: WorkerSlot) -> bool:
        """Hand a running worker the hot [push] settings (a line on its stdin); False if it is gone."""
        process = slot.process
        if process is None or process.returncode is not None or process.stdin is None:
            return False
        try:
            process.stdin.write(encode_settings(self.ctx.config))
        except (OSError, RuntimeError):
            return False
        return True

    async def stop(self) -> None:
        """Every worker: SIGTERM (and stdin closed), then SIGKILL after ``stop_grace``."""
        await asyncio.gather(*(self._stop_one(process) for process in self.processes()))

    async def _stop_one(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(self.stop_grace):
                await process.wait()
        except TimeoutError:
            log.warning("push: worker process %d did not stop within %.0fs; killing it", process.pid,
                        self.stop_grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    # ---- metrics --------------------------------------------------------------------------------
    def _mirror_metrics(self) -> None:
        """The server's own push metrics (zero: it sends nothing; its owed gauge is set only when
        the API counts) give way to the worker's."""
        for value in vars(metrics).values():
            names = _push_family_names(value)
            if names:
                with contextlib.suppress(KeyError):
                    REGISTRY.unregister(value)
                    self._unregistered.append(value)
        self._mirror = MirroredMetrics(self.view)
        REGISTRY.register(self._mirror)

    def _unmirror_metrics(self) -> None:
        if self._mirror is not None:
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(self._mirror)
            self._mirror = None
        for collector in self._unregistered:
            with contextlib.suppress(ValueError):
                REGISTRY.register(collector)  # type: ignore[arg-type]
        self._unregistered.clear()


def _push_family_names(value: object) -> set[str]:
    describe = getattr(value, "describe", None)
    if describe is None or not hasattr(value, "collect"):
        return set()
    try:
        names = {family.name for family in describe()}
    except Exception:
        return set()
    return names if names and all(name.startswith(PREFIX) for name in names) else set()
