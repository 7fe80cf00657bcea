"""Audit events of administrators' actions (``mdm.core.event_types_audit``): who (an API token, or
the OS user of a local CLI run), what (the operation and its target), from where (the client's
address, or ``local:<hostname>``) and the outcome.

The admin API records a change through ``pending``: the database layer
(``mdm.db.audit_context``) writes the event in the first transaction of the request that changes
something, so the change and its audit commit together. Failures (5xx) and refused scopes (403),
which changed nothing, are recorded by the framework in a transaction of their own (``record``,
``record_denied``); other refusals (bad input, 404, 409) write nothing.
A local CLI action runs inside ``local_action`` (the same mechanism, the OS user as the actor).

A target holds only identifying facts (ids, GUIDs, serials, names, types), chosen by ``target_of``
from path parameters and a fixed list of body fields: never a secret, never a whole body.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.event_types_audit import ADMIN_ACTION, ADMIN_ACTION_DENIED
from mdm.core.events import emit, event_values
from mdm.db.audit_context import PENDING, Note, PendingAudit

Outcome = Literal["done", "failed"]
# Body fields that identify what an action is about. Anything else (command arguments, passwords,
# CSRs, policy settings, e-mail addresses) is left out.
TARGET_FIELDS = frozenset({
    "name", "user", "type", "platform", "scopes", "reason", "purpose", "group", "group_id",
    "parent_id", "device_id", "devices", "tags", "slot", "serial",
})
MAX_TEXT = 255
MAX_ITEMS = 20


@dataclass(frozen=True)
class Actor:
    name: str  # the token's name, or the OS user
    via: Literal["api", "cli"]
    source: str  # the client's address, or local:<hostname>
    token_id: int | None = None
    proxy: str | None = None  # the trusted proxy that said who the client was


@dataclass(frozen=True)
class Action:
    actor: Actor
    operation: str
    method: str | None = None
    route: str | None = None
    target: Mapping[str, Note] = field(default_factory=dict)
    request_id: str | None = None


def record(
    session: AsyncSession,
    action: Action,
    *,
    outcome: Outcome = "done",
    status: int | None = None,
    error: str | None = None,
    notes: Mapping[str, Note] | None = None,
) -> None:
    """Add the ``admin_action`` event of ``action`` to the caller's transaction."""
    emit(session, ADMIN_ACTION, **_body(action, outcome, status, error, notes))


def _body(
    action: Action, outcome: Outcome, status: int | None, error: str | None, notes: Mapping[str, Note] | None
) -> dict[str, Any]:
    actor = action.actor
    target = dict(action.target)
    if notes:
        target.update(target_of(notes, fields=None))
    body: dict[str, Any] = {
        "actor": actor.name, "token_id": actor.token_id, "via": actor.via, "operation": action.operation,
        "method": action.method, "route": action.route, "target": target, "source": actor.source,
        "proxy": actor.proxy, "outcome": outcome, "status": status, "error": error,
        "request_id": action.request_id,
    }
    return {k: v for k, v in body.items() if v is not None}


def record_denied(session: AsyncSession, action: Action, required_scope: str) -> None:
    """Add the ``admin_action_denied`` event (a valid token without the route's scope)."""
    actor = action.actor
    body: dict[str, Any] = {
        "actor": actor.name, "token_id": actor.token_id or 0, "operation": action.operation,
        "method": action.method or "", "route": action.route or "", "target": dict(action.target),
        "source": actor.source, "proxy": actor.proxy, "required_scope": required_scope,
        "request_id": action.request_id,
    }
    emit(session, ADMIN_ACTION_DENIED, **{k: v for k, v in body.items() if v is not None})


def pending(action: Action) -> PendingAudit:
    """The holder ``mdm.db.audit_context.PENDING`` takes for a request performing ``action``: its
    ``write`` records it as done, with what the handler noted."""

    def write(session: AsyncSession, held: PendingAudit) -> None:
        record(session, action, notes=held.notes)

    def values(held: PendingAudit) -> dict[str, Any]:
        # The same row as ``write`` adds, for a caller writing it by a statement of its own.
        return event_values(ADMIN_ACTION, **_body(action, "done", None, None, held.notes))

    return PendingAudit(write=write, values=values)


def local_actor() -> Actor:
    """The operating-system user of a CLI run on this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        user = f"uid:{os.getuid()}"
    return Actor(name=user, via="cli", source=f"local:{socket.gethostname()}")


def record_local(session: AsyncSession, operation: str, **target: Any) -> None:
    """A local CLI action that changed no row of its own (files of the data directory), in a
    transaction of its own."""
    record(session, Action(local_actor(), operation, target=target_of(target, fields=None)))


@contextmanager
def local_action(operation: str, **target: Any) -> Iterator[PendingAudit]:
    """Around a local CLI action that changes the database (``asyncio.run`` inside, which copies
    the context): the first transaction that changes something writes the ``admin_action`` event
    of the OS user from ``local:<hostname>`` before it commits, as the admin API does."""
    held = pending(Action(local_actor(), operation, target=target_of(target, fields=None)))
    token = PENDING.set(held)
    try:
        yield held
    finally:
        PENDING.reset(token)


def target_of(values: Mapping[str, Any], fields: frozenset[str] | None = TARGET_FIELDS) -> dict[str, Note]:
    """The identifying facts of ``values`` (only ``fields`` when given), each bounded: text cut at
    255 characters, lists at 20 items (with ``<name>_count`` when longer). Values of other shapes
    (mappings of settings, free-form arguments) are left out; a nested model such as
    ``{"group": 3}`` contributes its own identifying fields."""
    out: dict[str, Note] = {}
    for key, value in values.items():
        if fields is not None and key not in fields:
            continue
        if isinstance(value, Mapping):
            out.update(target_of(value, fields))
            continue
        if hasattr(value, "model_dump"):
            out.update(target_of(value.model_dump(), fields))
            continue
        checked = _bounded(value)
        if checked is not None:
            out[key] = checked
        if isinstance(value, list | tuple) and len(value) > MAX_ITEMS:
            out[f"{key}_count"] = len(value)
    return out


def _bounded(value: Any) -> Note | None:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, list | tuple):
        items = list(value)[:MAX_ITEMS]
        if all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            return [int(i) for i in items]
        if all(isinstance(i, str) for i in items):
            return [str(i)[:MAX_TEXT] for i in items]
    return None
