"""The seam where a platform plugs in how its devices renew a certificate.

A platform plugin, at its start-up, registers one ``Renewer`` per protocol into the process's
``Renewers`` (``ctx.services[mdm.pki.services.RENEWERS]``, created by the PKI plugin, which starts
first). The renewal worker asks it in two steps: ``prepare_renewal`` outside any transaction (the
slow part: a key pair, the certificate source, which may be an enterprise CA across the network,
signing a profile), then the ``RenewalStep`` it returned inside the write transaction that
checks the certificate is still valid and records (queue a command, set a flag the next sync
returns). When the device later presents its new request, the platform issues through
``issuance.issue`` with ``renews_serial=<old serial>``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol as TypingProtocol

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, Protocol
from mdm.pki.tables import IssuedCertificateRecord


class RenewalUnavailable(Exception):
    """This device cannot be asked to renew now (e.g. no push token); retried later."""


# In the write transaction, with the device and the certificate read again (still valid):
# ask the device and return a short note for the event (e.g. "InstallProfile queued"), or raise
# RenewalUnavailable to skip. It must be quick: on SQLite it holds the server's one writer.
RenewalStep = Callable[[AsyncSession, Device, IssuedCertificateRecord], Awaitable[str]]


class Renewer(TypingProtocol):
    async def prepare_renewal(self, device: Device, certificate: IssuedCertificateRecord) -> RenewalStep:
        """Outside any transaction (``device`` and ``certificate`` as read just before, detached):
        whatever is slow about asking ``device`` for a replacement of ``certificate``. Returns
        the step that asks, run in the write transaction. Raise RenewalUnavailable to skip."""
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
