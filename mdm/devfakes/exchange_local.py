"""A ``CmdletRunner`` over an in-process fake organisation, without the wire.

A unit-test aid for the EAS domain layers (discovery, the command executor, the policy service)
while and besides the PowerShell Remoting path: it runs each ``Cmdlet`` through
``Organisation.execute`` exactly as the PSRP fake would (the name per the detected naming, the
parameters from ``Cmdlet.parameters_for()`` and switches as True, values untouched) and maps error
records with ``mdm.eas.faults.fault_error``, as the real runner does. It is NOT the production
runner: no connection, no Kerberos, no retries or failover; ``limit_seconds`` is honoured (the
cmdlet runs in a worker thread, so an ``Organisation.delay`` makes it time out). End-to-end
behaviour is tested through ``mdm.eas.runner`` against ``mdm.devfakes.exchange_psrp``.

One runner is one runspace: its ``SessionState`` (Set-AdServerSettings) lasts until ``close``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mdm.devfakes.exchange_org import ExchangeFault, Organisation, SessionState
from mdm.eas.cmdlets import NAMING_PROBE, Cmdlet, Naming, get_command
from mdm.eas.errors import ExchangeError, ExchangeTimeout, ExchangeUnavailable
from mdm.eas.faults import fault_error
from mdm.eas.records import PSRecord
from mdm.eas.seams import ServerHealth

SERVER = "local"


class LocalOrgRunner:
    """``naming_probe``: find the naming with ``Get-Command -Name <2013 name>`` once, as the real
    runner does (it shows in ``org.calls``); False: take ``org.naming`` without a call."""

    def __init__(self, org: Organisation, *, principal: str, naming_probe: bool = True) -> None:
        self.org = org
        self.principal = principal
        self.session = SessionState()
        self._probe = naming_probe
        self._naming: Naming | None = None
        self._closed = False
        self._last_ok: datetime | None = None
        self._last_error: ExchangeError | None = None
        self._last_error_at: datetime | None = None

    @staticmethod
    def parameters(cmdlet: Cmdlet, naming: Naming = Naming.EXCHANGE_2010) -> dict[str, Any]:
        """What reaches Exchange: the named parameters under the names of ``naming``
        (``-Confirm:$false`` for destructive cmdlets) and the switches as True."""
        params: dict[str, Any] = dict(cmdlet.parameters_for(naming))
        params.update((switch, True) for switch in cmdlet.switches)
        return params

    def _execute(self, naming: Naming, cmdlets: Sequence[Cmdlet]) -> list[PSRecord]:
        """The statements of one pipeline: each runs; the first error record is raised after."""
        out: list[PSRecord] = []
        first: ExchangeError | None = None
        for cmdlet in cmdlets:
            name = cmdlet.name(naming)
            try:
                written = self.org.execute(name, self.parameters(cmdlet, naming), principal=self.principal,
                                           session=self.session)
            except ExchangeFault as fault:
                if first is None:
                    first = fault_error(cmdlet=name, message=fault.message, error_id=fault.error_id,
                                        category=fault.category, exception_type=fault.exception_type,
                                        target=fault.target, server=SERVER)
                continue
            out.extend(dict(o.properties) for o in written)
        if first is not None:
            raise first
        return out

    async def _run(self, cmdlets: Sequence[Cmdlet], limit_seconds: float | None,
                   naming: Naming | None = None) -> list[PSRecord]:
        if self._closed:
            raise ExchangeUnavailable("the runner is closed", server=SERVER)
        use = naming or await self.naming()
        try:
            result = await asyncio.wait_for(asyncio.to_thread(self._execute, use, cmdlets),
                                            limit_seconds)
        except TimeoutError:
            error: ExchangeError = ExchangeTimeout(
                f"{cmdlets[0].name(use)} did not finish within {limit_seconds} s", server=SERVER)
            self._failed(error)
            raise error from None
        except ExchangeError as exc:
            self._failed(exc)
            raise
        self._last_ok = datetime.now(UTC)
        return result

    def _failed(self, error: ExchangeError) -> None:
        self._last_error = error
        self._last_error_at = datetime.now(UTC)

    async def run(self, cmdlet: Cmdlet, *, limit_seconds: float | None = None) -> list[PSRecord]:
        return await self._run([cmdlet], limit_seconds)

    async def run_batch(self, cmdlets: Sequence[Cmdlet], *,
                        limit_seconds: float | None = None) -> list[PSRecord]:
        if not cmdlets:
            return []
        return await self._run(list(cmdlets), limit_seconds)

    async def naming(self) -> Naming:
        if self._naming is None:
            if self._probe:
                found = await self._run([get_command(NAMING_PROBE)], None, Naming.EXCHANGE_2010)
                self._naming = Naming.EXCHANGE_2013 if found else Naming.EXCHANGE_2010
            else:
                self._naming = self.org.naming
        return self._naming

    def health(self) -> Sequence[ServerHealth]:
        err = self._last_error
        return [ServerHealth(
            name=SERVER, url="local:", connected=not self._closed, last_ok_at=self._last_ok,
            last_error=err.message if err else None, last_error_reason=err.reason if err else None,
            last_error_at=self._last_error_at)]

    async def close(self) -> None:
        self._closed = True
        self.session = SessionState()
        self._naming = None
