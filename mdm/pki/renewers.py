"""The seam where a platform plugs in how its devices renew a certificate.

A platform plugin, at its start-up, registers one ``Renewer`` per protocol into the process's
``Renewers`` (``ctx.services[mdm.pki.services.RENEWERS]``, created by the PKI plugin, which starts
first). The renewal worker asks it inside its transaction (queue a command, set a flag the next
sync returns); when the device later presents its new request, the platform issues through
``issuance.issue`` with ``renews_serial=<old serial>``.
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, Protocol
from mdm.pki.tables import IssuedCertificateRecord


class RenewalUnavailable(Exception):
    """This device cannot be asked to renew now (e.g. no push token); retried later."""


class Renewer(TypingProtocol):
    async def request_renewal(
        self, session: AsyncSession, device: Device, certificate: IssuedCertificateRecord
    ) -> str:
        """Ask ``device`` for a replacement of ``certificate`` within ``session`` and return a short
        note for the event (e.g. ``"InstallProfile queued"``). Raise RenewalUnavailable to skip."""
        ...


def protocol_value(protocol: Protocol | int | str) -> int:
    """``Protocol.IOS``, ``"ios"`` or the stored integer, as the stored integer."""
    if isinstance(protocol, str):
        return Protocol[protocol.upper()].value
    return int(protocol)


class Renewers:
    """The renewer of each protocol, for one process. One renewer per protocol."""

    def __init__(self) -> None:
        self._by_protocol: dict[int, Renewer] = {}

    def register(self, protocol: Protocol | int | str, renewer: Renewer) -> None:
        self._by_protocol[protocol_value(protocol)] = renewer

    def unregister(self, protocol: Protocol | int | str) -> None:
        self._by_protocol.pop(protocol_value(protocol), None)

    def get(self, protocol: int) -> Renewer | None:
        return self._by_protocol.get(protocol)
