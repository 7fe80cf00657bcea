"""``ExchangeRunner``: the production ``CmdletRunner`` (DESIGN §8), PowerShell Remoting to the
configured Client Access servers.

One long-lived runspace pool per server (``runner_pool.ServerConnection``), opened on first use
and reopened after a failure. pypsrp is synchronous, so every call runs in a thread pool of its
server (``concurrency`` workers, the pool's size too): the event loop never blocks, and at most
``concurrency`` pipelines run on a server at once.

A call has one time budget (``limit_seconds``, else ``cmdlet_timeout_seconds``) for everything:
the pipeline, its retries and the pauses between them. Transient failures (unreachable,
restarted, HTTP 5xx, garbage, timeout) are retried ``retries`` times with decorrelated-jitter
backoff; in cluster mode the failed server is passed over for ``failover_seconds`` and the next
server is tried at once (a failover to a server this call has not tried yet is not a retry).
A cmdlet that changes something (New-, Remove-) is not repeated once the server had accepted its
pipeline: a lost answer must not turn one removal into a second one that reports "not found".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from mdm.core.backoff import Backoff
from mdm.eas import runner_metrics as metrics
from mdm.eas.cmdlets import Cmdlet, Naming
from mdm.eas.config import EasConfig
from mdm.eas.credentials import KerberosLogin
from mdm.eas.errors import ExchangeError, ExchangeUnavailable, NotConfigured
from mdm.eas.records import PSRecord
from mdm.eas.runner_pool import ServerConnection, after_send
from mdm.eas.seams import ServerHealth

log = logging.getLogger(__name__)
T = TypeVar("T")

# Logical names that are safe to run twice (reads, and changes that set a value).
_REPEATABLE_PREFIXES = ("Get-",)
_REPEATABLE = frozenset({
    "Set-CASMailbox", "Set-ActiveSyncMailboxPolicy", "Set-AdServerSettings", "Clear-ActiveSyncDevice",
})


def repeatable(cmdlets: Sequence[Cmdlet]) -> bool:
    return all(c.logical_name.startswith(_REPEATABLE_PREFIXES) or c.logical_name in _REPEATABLE
               for c in cmdlets)


@dataclass
class _Server:
    conn: ServerConnection
    executor: ThreadPoolExecutor
    last_ok_at: datetime | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    last_error_at: datetime | None = None
    passed_over_until: float = 0.0

    def health(self) -> ServerHealth:
        return ServerHealth(
            name=self.conn.entry, url=self.conn.url, connected=self.conn.connected,
            last_ok_at=self.last_ok_at, last_error=self.last_error,
            last_error_reason=self.last_error_reason, last_error_at=self.last_error_at,
        )


class ExchangeRunner:
    """Implements ``mdm.eas.seams.CmdletRunner`` over pypsrp."""

    def __init__(self, config: EasConfig, data_dir: Path, *,
                 login: KerberosLogin | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not config.servers:
            raise NotConfigured("[eas] servers is empty: no Exchange server to talk to")
        self.config = config
        self.login = login or KerberosLogin.from_config(config, data_dir)
        entries = config.servers if config.mode == "cluster" else config.servers[:1]
        self._servers = [
            _Server(ServerConnection(entry, config, self.login),
                    ThreadPoolExecutor(max_workers=config.concurrency,
                                       thread_name_prefix=f"eas-{entry}"))
            for entry in entries
        ]
        self._clock = clock
        self._closed = False

    # ---- CmdletRunner -----------------------------------------------------------------------

    async def run(self, cmdlet: Cmdlet, *, limit_seconds: float | None = None) -> list[PSRecord]:
        return await self.run_batch([cmdlet], limit_seconds=limit_seconds)

    async def run_batch(self, cmdlets: Sequence[Cmdlet], *,
                        limit_seconds: float | None = None) -> list[PSRecord]:
        if not cmdlets:
            return []
        statements = list(cmdlets)
        label = statements[-1].logical_name
        started = self._clock()
        try:
            result = await self._call(lambda conn, deadline: conn.run(statements, deadline),
                                      limit_seconds, repeat_ok=repeatable(statements))
        except ExchangeError as exc:
            metrics.CMDLETS.labels(label, exc.reason).inc()
            raise
        finally:
            metrics.LATENCY.labels(label).observe(self._clock() - started)
        metrics.CMDLETS.labels(label, "ok").inc()
        return result

    async def naming(self) -> Naming:
        return await self._call(lambda conn, deadline: conn.naming(), None, repeat_ok=True)

    def health(self) -> Sequence[ServerHealth]:
        return [server.health() for server in self._servers]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        for server in self._servers:
            try:
                await loop.run_in_executor(server.executor, server.conn.close)
            except Exception as exc:
                log.debug("eas: closing %s: %s", server.conn.url, exc)
            await asyncio.to_thread(server.executor.shutdown, True, cancel_futures=True)

    # ---- attempts, retries, failover ---------------------------------------------------------

    def _pick(self) -> _Server:
        """The first server not passed over; if all are, the one that comes back first."""
        now = self._clock()
        for server in self._servers:
            if server.passed_over_until <= now:
                return server
        return min(self._servers, key=lambda s: s.passed_over_until)

    async def _call(self, fn: Callable[[ServerConnection, float], T], limit_seconds: float | None,
                    *, repeat_ok: bool) -> T:
        if self._closed:
            raise ExchangeUnavailable("the Exchange runner is closed")
        cfg = self.config
        budget = limit_seconds if limit_seconds is not None else cfg.cmdlet_timeout_seconds
        deadline = self._clock() + budget
        backoff = Backoff(cfg.backoff_initial_seconds, cfg.backoff_max_seconds)
        retries_left = cfg.retries
        tried: set[int] = set()
        loop = asyncio.get_running_loop()
        while True:
            server = self._pick()
            tried.add(id(server))
            try:
                result = await loop.run_in_executor(server.executor, fn, server.conn, deadline)
            except ExchangeError as exc:
                self._failed(server, exc)
                if not exc.transient or (after_send(exc) and not repeat_ok):
                    raise
                if len(self._servers) > 1:
                    server.passed_over_until = self._clock() + cfg.failover_seconds
                    following = self._pick()
                    if id(following) not in tried and following.passed_over_until <= self._clock():
                        log.warning("eas: failing over from %s to %s", server.conn.entry,
                                    following.conn.entry)
                        continue
                if retries_left <= 0:
                    raise
                retries_left -= 1
                delay = backoff.next_delay()
                if self._clock() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
                continue
            server.last_ok_at = datetime.now(UTC)
            server.passed_over_until = 0.0
            return result

    def _failed(self, server: _Server, exc: ExchangeError) -> None:
        server.last_error = exc.message
        server.last_error_reason = exc.reason
        server.last_error_at = datetime.now(UTC)
        log.warning("eas: %s on %s: %s", exc.reason, server.conn.entry, exc.message)
