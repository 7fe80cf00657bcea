"""The push dispatcher's table: the wake-ups owed to devices, one per device (coalesced).

A row is written (or moved earlier) after the transaction that gave the device work commits, and
by the recovery pass and the daily sweep; the dispatcher's worker takes due rows in batches and
deletes a row once nothing more is owed. ``requests`` counts the wake-ups asked for since the row
was created: a result is applied only to a row nobody asked again for while the push was in
flight (a newer request keeps its own due time).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mdm.db.models import Base, utcnow

# ``reason`` of a row the dispatcher keeps after a sent push, to push again while the device has
# queued commands and stays silent.
REPUSH = "repush"


class PushWakeup(Base):
    __tablename__ = "push_wakeups"
    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    due_at: Mapped[datetime] = mapped_column()
    reason: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=1)
    last_attempt_at: Mapped[datetime | None] = mapped_column()
    last_result: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ix_push_wakeups_due_at", "due_at"),)
