"""The push seam (DESIGN §6): how a platform's push client wakes devices that have work.

A platform plugin registers one ``Pusher`` per protocol in ``ServerContext.pushers`` at start-up.
Command enqueue (single and bulk) calls ``Pushers.wake`` and the NotNow back-off
``Pushers.wake_at`` (a push once the back-off is over) **after** their transaction commits: a push
must never announce a command that a rollback took back. Without a registered pusher both do
nothing and nothing is lost: the device fetches its commands at its next poll or check-in (and
the iOS NotNow request is also kept as a durable ``ios_push_requests`` row).

A pusher that keeps its wake-ups as rows (``OwingPusher``: the push dispatcher) can also record
them in the caller's own transaction (``Pushers.owe``, as ``events.emit`` does for events): they
then commit with the work they announce, or roll back with it, and cost no transaction of their
own; ``Pushers.owed`` nudges the pusher after the commit. The bulk queue does this per batch.
One that can also write them as a part of the caller's one statement (``PartOwingPusher``: a
data-modifying CTE on PostgreSQL) lets the single enqueue stay one statement without a
transaction block (``mdm.core.enqueue_direct``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, runtime_checkable
from typing import Protocol as TypingProtocol

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Protocol

log = logging.getLogger("mdm.push")


class Pusher(TypingProtocol):
    """Wakes devices of one protocol. Implementations must not raise for a device they cannot
    reach (no push token, expired certificate): they record it and return; a push is a hint."""

    async def wake(self, device_id: int, reason: str) -> None: ...

    async def wake_many(self, device_ids: Sequence[int], reason: str) -> None: ...

    async def wake_at(self, device_id: int, due: datetime, reason: str) -> None:
        """Wake the device once ``due`` has passed (not before)."""
        ...


@runtime_checkable
class OwingPusher(Pusher, TypingProtocol):
    """A ``Pusher`` whose wake-ups are rows it can write in the caller's transaction."""

    async def owe(self, session: AsyncSession, device_ids: Sequence[int], reason: str) -> None:
        """Owe a wake-up now to these devices, written in ``session``'s transaction (committed or
        rolled back with it). Raises if the statement fails: the caller's transaction fails."""
        ...

    def nudge(self) -> None:
        """After the commit of an ``owe``: the rows may be due before what the worker waits for."""
        ...


@dataclass(frozen=True, slots=True)
class OwedPart:
    """An ``owe`` as a part of the caller's own statement (PostgreSQL: a data-modifying CTE) or
    as a statement of the caller's ``sqlite_direct`` transaction (SQLite) instead of a session's.
    ``build(ids)``: the INSERT that owes the wake-ups to the devices whose ids the one-column
    SELECT ``ids`` gives (a statement built once per ``build`` and kept by the caller: the same
    for every call); ``params``: its parameters for this call (named ``w_*``: the caller's own
    are not)."""

    build: Callable[[Any], Any]
    params: Mapping[str, Any]


@runtime_checkable
class PartOwingPusher(OwingPusher, TypingProtocol):
    """An ``OwingPusher`` whose ``owe`` can also be a part of the caller's one statement."""

    def owed_part(self, reason: str, dialect: str) -> OwedPart | None:
        """``owe(session, ids, reason)`` as an ``OwedPart`` for this SQLAlchemy dialect
        (``postgresql``, ``sqlite``), with exactly its rows and conflict handling (the caller calls
        ``nudge`` after its statement committed); None when it cannot now: the caller then uses
        ``owe`` in a transaction."""
        ...


# The wake-up ``reason`` of a bulk operation's devices: the push service hands the accepted pushes
# of such reasons back through ``PushReceipts`` so that the operation can show how many it woke.
BULK_REASON_PREFIX = "bulk:"


def bulk_reason(bulk_id: int) -> str:
    return f"{BULK_REASON_PREFIX}{bulk_id}"


def bulk_id_of(reason: str | None) -> int | None:
    """The bulk operation a wake-up reason names, or None."""
    if not reason or not reason.startswith(BULK_REASON_PREFIX):
        return None
    tail = reason[len(BULK_REASON_PREFIX):]
    return int(tail) if tail.isdigit() else None


class PushReceipts(TypingProtocol):
    """Told, after each batch the push service sent, how many pushes the provider accepted per
    wake-up reason (``{"bulk:17": 480, "command": 3}``). Must be cheap and must not raise for a
    reason it does not know; it runs in the push worker, outside the transaction of the batch."""

    async def accepted(self, by_reason: Mapping[str, int]) -> None: ...


@runtime_checkable
class SessionReceipts(PushReceipts, TypingProtocol):
    """Receipts the push service can hand over inside the transaction that records the batch's
    answers (``session``'s): no write transaction of their own per batch (on SQLite, one more
    wait for the write lock each). A failing statement raises: the batch's answers roll back
    with it and its wake-ups are sent again after their lease."""

    async def accepted_in(self, session: AsyncSession, by_reason: Mapping[str, int]) -> None: ...


class Pushers:
    """The registered pushers by protocol; ``wake`` is the one call the rest of the code makes."""

    def __init__(self) -> None:
        self._by_protocol: dict[Protocol, Pusher] = {}

    def register(self, protocol: Protocol, pusher: Pusher) -> None:
        if protocol in self._by_protocol:
            raise ValueError(f"a pusher for {protocol.name} is already registered")
        self._by_protocol[protocol] = pusher

    def unregister(self, protocol: Protocol) -> None:
        self._by_protocol.pop(protocol, None)

    def get(self, protocol: Protocol | int) -> Pusher | None:
        return self._by_protocol.get(Protocol(protocol))

    async def wake(self, protocol: Protocol | int, device_ids: Iterable[int], reason: str) -> None:
        """Wake these devices (of one protocol); a failing pusher is logged, never raised: the
        caller's work is already committed and the device still gets it at its next poll."""
        pusher = self.get(protocol)
        if pusher is None:
            return
        ids = list(device_ids)
        if not ids:
            return
        try:
            if len(ids) == 1:
                await pusher.wake(ids[0], reason)
            else:
                await pusher.wake_many(ids, reason)
        except Exception:
            log.exception("push to %d %s device(s) failed; they get their work at the next poll",
                          len(ids), Protocol(protocol).name.lower())

    async def owe(self, session: AsyncSession, protocol: Protocol | int, device_ids: Sequence[int],
                  reason: str) -> bool:
        """Owe wake-ups to these devices (of one protocol) in ``session``'s transaction, when the
        protocol's pusher can (``OwingPusher``): True, and call ``owed`` after the commit. False
        when it cannot (no pusher: nothing to do; another kind: ``wake`` them after the commit).
        A failing statement raises: the wake-ups are part of the caller's transaction."""
        pusher = self.get(protocol)
        if not isinstance(pusher, OwingPusher):
            return False
        if device_ids:
            await pusher.owe(session, device_ids, reason)
        return True

    def owed(self, protocols: Iterable[Protocol | int]) -> None:
        """After the commit of ``owe``: nudge the pushers of these protocols."""
        for protocol in set(protocols):
            pusher = self.get(protocol)
            if isinstance(pusher, OwingPusher):
                pusher.nudge()

    async def wake_at(self, protocol: Protocol | int, device_id: int, due: datetime, reason: str) -> None:
        """A wake-up once ``due`` has passed (the NotNow back-off); never raises, like ``wake``."""
        pusher = self.get(protocol)
        if pusher is None:
            return
        try:
            await pusher.wake_at(device_id, due, reason)
        except Exception:
            log.exception("scheduling a push to %s device %d failed; it gets its work at the next poll",
                          Protocol(protocol).name.lower(), device_id)
