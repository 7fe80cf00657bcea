"""Column types shared by every table module.

``UtcDateTime`` is the one place where a timestamp read back from the database is made
timezone-aware: PostgreSQL returns aware values, SQLite (which stores text) returns naive ones
that are UTC by the convention of this schema. Code never compares naive with aware datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always gives back an aware UTC datetime."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        # A naive value is UTC by the schema's convention (SQLite hands them back that way).
        return None if value is None else as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp: datetime = value
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=UTC)
        return stamp.astimezone(UTC) if stamp.utcoffset() else stamp


def as_utc(value: datetime) -> datetime:
    """A datetime from outside the database (a certificate, a message) as aware UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
