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
    read when no audit is pending."""
    pending = PENDING.get()
    if pending is None or pending.written or pending.closed:
        return
    _Watch(session, pending).listen()


class _Watch:
    def __init__(self, session: AsyncSession, pending: PendingAudit) -> None:
        self.session = session
        self.pending = pending
        self.changed = False
        self.added = False

    def listen(self) -> None:
        sync = self.session.sync_session
        event.listen(sync, "do_orm_execute", self._executed)
        event.listen(sync, "after_flush", self._flushed)
        event.listen(sync, "before_commit", self._before_commit)
        event.listen(sync, "after_commit", self._after_commit)

    def _executed(self, state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            self.changed = True
        elif isinstance(state.statement, TextClause):
            # A textual statement counts as a change unless it reads.
            words = state.statement.text.lstrip().split(None, 1)
            if not words or words[0].lower() not in {"select", "with", "show", "explain"}:
                self.changed = True

    def _flushed(self, _session: Session, _context: Any) -> None:
        self.changed = True

    def _before_commit(self, sync: Session) -> None:
        if self.added or self.pending.written or self.pending.closed or sync.in_nested_transaction():
            return  # a savepoint's commit is not the transaction's
        if self.changed or sync.new or sync.dirty or sync.deleted:
            self.added = True
            self.pending.write(self.session, self.pending)

    def _after_commit(self, _session: Session) -> None:
        if self.added:
            self.pending.written = True
