"""The seam between the EAS domain and Exchange: a ``CmdletRunner`` runs typed cmdlets and hands
back their output objects as plain records (``records.PSRecord``), or raises an ``errors``
exception. The production runner (``runner.py``) speaks PowerShell Remoting (pypsrp) to the
configured Client Access servers; ``mdm.devfakes.exchange_psrp`` is the contract fake it is tested
against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol as TypingProtocol

from mdm.eas.cmdlets import Cmdlet, Naming
from mdm.eas.records import PSRecord


@dataclass(frozen=True, slots=True)
class ServerHealth:
    """What the runner knows of one Exchange server (the status page and ``mdm status``)."""

    name: str  # host name as configured
    url: str  # the WSMan endpoint
    connected: bool  # a runspace pool is open
    last_ok_at: datetime | None
    last_error: str | None  # the last failure's message (no secret in it)
    last_error_reason: str | None  # its ``ExchangeError.reason``
    last_error_at: datetime | None


class CmdletRunner(TypingProtocol):
    async def run(self, cmdlet: Cmdlet, *, limit_seconds: float | None = None) -> list[PSRecord]:
        """Run one cmdlet and return its output objects; raise an ``ExchangeError``. Transient
        failures are retried inside (with backoff; in cluster mode on the next server) until the
        runner's retry budget or ``limit_seconds`` is spent."""
        ...

    async def run_batch(
        self, cmdlets: Sequence[Cmdlet], *, limit_seconds: float | None = None
    ) -> list[PSRecord]:
        """Several cmdlets as the statements of ONE pipeline (one round of PSRP messages instead of
        one per cmdlet), their output objects merged in order. If any statement writes an error
        record, raise it (``CmdletFailed``/``ObjectNotFound``): callers that need to know which one
        failed run the batch's cmdlets one by one."""
        ...

    async def naming(self) -> Naming:
        """The cmdlet names of the server in use (found once per connection)."""
        ...

    def health(self) -> Sequence[ServerHealth]:
        """One entry per configured server, from memory (no I/O)."""
        ...

    async def close(self) -> None: ...
