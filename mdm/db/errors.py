"""Which database errors mean "the database cannot serve this now" (answered 503 with
Retry-After, logged in one line) rather than a bug (a 500 with its traceback)."""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa_exc

from mdm.db import sqlite_driver

RETRY_AFTER_SECONDS = 5


def unavailable(error: BaseException) -> bool:
    """SQLite's write lock held by another process past the busy timeout, the connection pool
    exhausted, a connection to PostgreSQL refused or lost."""
    if isinstance(error, sa_exc.TimeoutError | ConnectionError):  # (the pool; a refused connect)
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        orig = error.orig
        return isinstance(orig, sqlite3.OperationalError) and sqlite_driver.is_busy(orig)
    return False
