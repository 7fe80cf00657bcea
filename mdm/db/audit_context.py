"""The administrator action in progress, so that its audit event commits in the same transaction as
the change it records.

The admin API's framework (``mdm.api.framework``) sets ``PENDING`` for the duration of a mutating
request, once its token is known, with a ``write`` callback (``mdm.core.audit``) that adds the audit
event to a session. ``Database.transaction`` calls ``watch`` on each session it opens: while an audit
is pending and not yet written, the first transaction of the request that changes something gets the
event added just before it commits (SQLAlchemy's ``before_commit``; the flush that follows writes it),
so the change and its audit commit together or not at all. ``written`` turns true only after that
commit succeeded; a transaction that rolls back leaves it false (and its audit row is gone with it).
This layer knows nothing of what the event holds: ``write`` is passed in, never looked up.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql.elements import TextClause

# What a handler may add to the audit's target: ids, names, short lists of them.
Note = str | int | bool | list[str] | list[int]


@dataclass(eq=False)
class PendingAudit:
    """One request's audit: ``write(session, self)`` adds the event (called at most once per
    successful commit, in the committing transaction)."""

    write: Callable[[AsyncSession, PendingAudit], None]
    # The event's outbox row (``mdm.core.events.event_values``), for a caller that writes it with
    # a statement of its own in its transaction (``claim``); None: only ``write`` can.
    values: Callable[[PendingAudit], dict[str, Any]] | None = None
    # Identifying, non-secret facts the handler learnt (e.g. the id of what it created).
    notes: dict[str, Note] = field(default_factory=dict)
    written: bool = False
    # Set when the request has been answered: a task it started (which copied the context) must
    # not put the request's audit into a transaction of its own later.
    closed: bool = False


PENDING: ContextVar[PendingAudit | None] = ContextVar("mdm_pending_audit", default=None)


def note(**facts: Note) -> None:
    """Add identifying, non-secret facts to the target of the audit in progress (no-op outside a
    mutating admin request). Must be called before the transaction that commits the change ends."""
    pending = PENDING.get()
    if pending is not None:
        pending.notes.update(facts)


def watch(session: AsyncSession) -> None:
    """Called by ``Database.transaction`` on every session it opens; costs one context-variable
    read when no audit is pending, one dictionary entry when one is (the listeners below are the
    Session class's, registered once: four listeners per session cost ~0.2 ms a request)."""
    pending = PENDING.get()
    if pending is None or pending.written or pending.closed:
        return
    session.sync_session.info[_WATCH] = _Watch(session, pending)


_WATCH = "mdm_audit_watch"


def claim(session: AsyncSession | None) -> PendingAudit | None:
    """The audit in progress, for a caller that writes its event itself (``PendingAudit.values``,
    one statement of its own making) in the transaction of ``session``, or in a statement that
    commits by itself (``session`` None: the caller then sets ``written`` once it committed).
    With a session, the audit is taken from its watch: its ``before_commit`` adds nothing more
    and its commit marks the audit written. None when there is nothing to write (no audit
    pending, already written, or one that only ``write`` can add): the caller writes none."""
    pending = PENDING.get()
    if pending is None or pending.written or pending.closed or pending.values is None:
        return None
    if session is None:
        return pending
    watching = _watch_of(session.sync_session)
    if watching is None or watching.pending is not pending or watching.added:
        return None
    watching.added = True
    return pending


class _Watch:
    def __init__(self, session: AsyncSession, pending: PendingAudit) -> None:
        # Weak: the watch lives in the session's own ``info`` (a strong reference is a cycle).
        self.session = weakref.ref(session)
        self.pending = pending
        self.changed = False
        self.added = False

    def executed(self, state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            self.changed = True
        elif isinstance(state.statement, TextClause):
            # A textual statement counts as a change unless it reads.
            words = state.statement.text.lstrip().split(None, 1)
            if not words or words[0].lower() not in {"select", "with", "show", "explain"}:
                self.changed = True

    def before_commit(self, sync: Session) -> None:
        if self.added or self.pending.written or self.pending.closed or sync.in_nested_transaction():
            return  # a savepoint's commit is not the transaction's
        session = self.session()
        if session is not None and (self.changed or sync.new or sync.dirty or sync.deleted):
            self.added = True
            self.pending.write(session, self.pending)


def _watch_of(session: Session) -> _Watch | None:
    watching: _Watch | None = session.info.get(_WATCH)
    return watching


@event.listens_for(Session, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    watching = _watch_of(state.session)
    if watching is not None:
        watching.executed(state)


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    watching = _watch_of(session)
    if watching is not None:
        watching.changed = True


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    watching = _watch_of(session)
    if watching is not None:
        watching.before_commit(session)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    watching = _watch_of(session)
    if watching is not None and watching.added:
        watching.pending.written = True
