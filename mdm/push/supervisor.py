"""The server's side of the push worker process (``[push] worker = "process"``): starts it, hands
it the configuration, restarts it with back-off when it ends, restarts it when ``mdm reload``
changed what it was started with, stops it with the server (SIGTERM, then SIGKILL), and shows
what it reports (``dispatcher.stats`` of the server's dispatcher, the push metrics in ``/metrics``).

A wake-up the worker had leased when it died is sent by the next worker once its lease ends (the
dispatcher's ``lease_seconds``); the others are rows in ``push_wakeups`` and wait for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mdm.core.metrics import REGISTRY
from mdm.push import metrics
from mdm.push.assembly import Handoff
from mdm.push.dispatcher import PushDispatcher
from mdm.push.worker_channel import PREFIX, MirroredMetrics, WorkerView, parse
from mdm.push.worker_process import encode_start
from mdm.server.context import ServerContext

log = logging.getLogger("mdm.push")

HEALTHY_SECONDS = 60.0  # a worker that ran this long starts the back-off again at its minimum


@dataclass(frozen=True)
class WorkerCommand:
    """How the server starts its push worker (composed in ``mdm.plugins``)."""

    argv: Sequence[str]
    handoff: Handoff | None = None


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
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._sent_start: bytes | None = None
        self._restart = asyncio.Event()
        self._unregistered: list[object] = []
        self._mirror: MirroredMetrics | None = None

    # ---- the server's worker --------------------------------------------------------------------
    async def run(self) -> None:
        """Keep a worker process running until cancelled (the server stops)."""
        self._mirror_metrics()
        backoff = self.min_backoff
        try:
            while True:
                began = time.monotonic()
                try:
                    status = await self._run_once()
                except OSError as exc:  # the interpreter cannot be started: try again later
                    log.error("push: the worker process cannot be started: %s", exc)
                    status = None
                self.view.worker_ended()
                self.view.apply(self.dispatcher.stats)
                if self._restart.is_set():
                    self._restart.clear()
                    backoff = self.min_backoff
                    continue
                if time.monotonic() - began > HEALTHY_SECONDS:
                    backoff = self.min_backoff
                log.warning("push: the worker process ended (exit status %s); starting it again in %.0fs",
                            status, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._restart.wait(), backoff)
                self._restart.clear()
                backoff = min(backoff * 2, self.max_backoff)
        finally:
            await self.stop()
            self._unmirror_metrics()

    async def _run_once(self) -> int | None:
        start = encode_start(self.ctx.config, self._handoff())
        process = await asyncio.create_subprocess_exec(
            *self.command.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        self.process, self._sent_start = process, start
        self.starts += 1
        log.info("push: worker process started (pid %d)", process.pid)
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(start)
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        while line := await process.stdout.readline():
            snap = parse(line)
            if snap is not None:
                self.view.take(snap)
                self.view.apply(self.dispatcher.stats)
        return await self._reap(process)

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
        """After ``mdm reload``: a worker started with another configuration or identity than the
        server now holds is restarted (it reads both only when it starts)."""
        if self.process is None or self._sent_start == encode_start(self.ctx.config, self._handoff()):
            return False
        log.info("push: the configuration or the push identity changed; restarting the worker process")
        self._restart.set()
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        return True

    async def stop(self) -> None:
        """SIGTERM (and stdin closed), then SIGKILL after ``stop_grace``."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(self.stop_grace):
                await process.wait()
        except TimeoutError:
            log.warning("push: the worker process did not stop within %.0fs; killing it", self.stop_grace)
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
