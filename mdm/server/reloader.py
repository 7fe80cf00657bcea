"""SIGHUP / ``mdm reload``: re-read ``mdm.toml`` (with the environment overrides), apply what can
change at run time, re-read the server certificates, and report the outcome.

A file that does not load or validate is refused as a whole: the error (key and line) is logged
and written to ``run/reload.json``, and the server keeps running with its configuration. A valid
file is applied key by key (``mdm.config_reload``): hot keys now, the others after a restart; the
log and the status file name both. ``run/state.json`` always describes the configuration in use.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from mdm.config import Config, ConfigError
from mdm.config_reload import HotKeys, changed_keys, fingerprint, plan, run_callbacks
from mdm.server.context import ServerContext
from mdm.server.runfiles import write_reload_status, write_state

log = logging.getLogger("mdm.server")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Reloader:
    def __init__(
        self,
        ctx: ServerContext,
        load: Callable[[], Config] | None,
        reload_certificates: Callable[[], list[str]],
        overrides: Sequence[str] = (),
        hot: Sequence[HotKeys] = (),
        on_reload: Sequence[Callable[[ServerContext], Awaitable[None]]] = (),
    ) -> None:
        self.ctx = ctx
        self.hot = list(hot)
        self.on_reload = list(on_reload)
        self.load = load
        self.reload_certificates = reload_certificates
        # Keys set on the command line of `mdm serve` (e.g. logging.json by --json-logs): the file
        # cannot show them, so comparisons leave them out.
        self.overrides = list(overrides)
        self.seq = 0
        self.pending: list[str] = []
        self.started_at = _now()
        self.loaded_at = self.started_at
        self._lock = asyncio.Lock()

    def write_state(self) -> None:
        try:
            write_state(self.ctx.config.data_path, {
                "pid": os.getpid(),
                "started_at": self.started_at,
                "loaded_at": self.loaded_at,
                "config": fingerprint(self.ctx.config),
                "restart_pending": self.pending,
                "overrides": self.overrides,
            })
        except OSError as exc:
            log.warning("cannot write the run state in %s: %s", self.ctx.config.data_path, exc)

    async def reload(self) -> dict[str, Any]:
        async with self._lock:
            self.seq += 1
            status: dict[str, Any] = {
                "seq": self.seq, "pid": os.getpid(), "time": _now(), "ok": True, "config": "not read",
                "applied": [], "restart_needed": [], "error": None, "certificate_problems": [],
            }
            if self.load is not None:
                await self._reload_config(status)
            problems = self.reload_certificates()
            for hook in self.on_reload:  # files a feature re-reads in place (the push certificate)
                try:
                    await hook(self.ctx)
                except Exception as exc:
                    problems.append(f"{getattr(hook, '__qualname__', hook)}: {exc}")
            if problems:
                status["ok"] = False
                status["certificate_problems"] = problems
            try:
                write_reload_status(self.ctx.config.data_path, status)
            except OSError as exc:
                log.warning("cannot write the reload status: %s", exc)
            self.write_state()
            return status

    async def _reload_config(self, status: dict[str, Any]) -> None:
        assert self.load is not None
        try:
            new = await asyncio.to_thread(self.load)
            change = plan(self.ctx.config, new, self.hot)
        except ConfigError as exc:
            status.update(ok=False, config="refused", error=str(exc), restart_needed=self.pending)
            log.error("configuration reload refused, the server keeps its running configuration: %s", exc)
            return
        self.ctx.config = change.config
        failed = await run_callbacks(change.callbacks, self.ctx)
        self.loaded_at = status["time"]
        self.pending = changed_keys(self.ctx.config, new)
        status.update(applied=change.applied, restart_needed=self.pending)
        if failed:
            status.update(ok=False, error="; ".join(failed))
            log.error("configuration reload: applying failed for %s", "; ".join(failed))
        if change.applied:
            status["config"] = "applied"
            log.info("configuration reloaded: applied %s", ", ".join(change.applied))
        else:
            status["config"] = "unchanged" if not self.pending else "restart needed"
            log.info("configuration reloaded: nothing to apply")
        if self.pending:
            log.warning("configuration: needs a restart to take effect: %s", ", ".join(self.pending))
