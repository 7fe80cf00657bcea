"""The core link's state, one row (``id = 1``): written by the replica that delivers the outbox on
every transition and at most every few seconds, read by every replica's status light."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mdm.db.models import Base, utcnow


class ReportingLink(Base):
    __tablename__ = "reporting_link"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # "up" once a batch was delivered; "down" after the failures the worker tolerates.
    up: Mapped[bool] = mapped_column(Boolean, default=True)
    # Since when the link is in its current state.
    since: Mapped[datetime] = mapped_column(default=utcnow)
    last_success_at: Mapped[datetime | None] = mapped_column()
    last_failure_at: Mapped[datetime | None] = mapped_column()
    # The transport's short reason ("tls_error", "http_503", ...) and its one-line detail.
    last_failure_reason: Mapped[str | None] = mapped_column(String(64))
    last_failure_detail: Mapped[str | None] = mapped_column(String(512))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    # Undelivered (not dead) events, and the age of the oldest, as the deliverer last saw them.
    backlog: Mapped[int] = mapped_column(Integer, default=0)
    oldest_undelivered_at: Mapped[datetime | None] = mapped_column()
    dead_letters: Mapped[int] = mapped_column(Integer, default=0)
    # Which replica delivers ("host:pid"), and when it last wrote this row.
    deliverer: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
