"""One replica at a time does a job (delivers the outbox, discovers Exchange), replaced at once
when it dies.

PostgreSQL: a session-level advisory lock held on a connection of its own for as long as this
replica leads; the server releases it when that connection ends (a SIGKILLed process's connection
included). SQLite (one node): an exclusive ``flock`` on a file in DATA_DIR, released by the kernel
when the file's last descriptor closes (the process's death included). Each job has its own key
and file name (``leader_lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from typing import Protocol as TypingProtocol

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mdm.db.engine import Database

# pg_try_advisory_lock's key of the outbox delivery: "mdm-outbox" folded into a bigint. Every job
# has its own constant that no other advisory lock of the server uses.
ADVISORY_KEY = 0x6D646D_6F7574


class LeaderLock(TypingProtocol):
    async def acquire(self) -> bool:
        """Take the lock if it is free; True when this process holds it (now or already)."""
        ...

    async def still_held(self) -> bool:
        """False once the lock may have been lost (its connection died)."""
        ...

    async def release(self) -> None: ...


class AdvisoryLock:
    """``pg_try_advisory_lock`` on a dedicated connection (outside any transaction)."""

    def __init__(self, engine: AsyncEngine, key: int = ADVISORY_KEY) -> None:
        self._engine = engine
        self._key = key
        self._conn: AsyncConnection | None = None

    async def acquire(self) -> bool:
        if self._conn is not None:
            return True
        conn = await self._engine.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}))
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def still_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            await self._conn.execute(text("SELECT 1"))
        except (OSError, SQLAlchemyError):
            await self._drop()
            return False
        except BaseException:
            # Cancelled mid-statement (a shutdown): the connection's state is unknown, and
            # SQLAlchemy refuses it from then on (PendingRollbackError), so it is dropped (and
            # the lock with it: the next check says so and the caller competes again).
            await asyncio.shield(self._drop())
            raise
        return True

    async def release(self) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(OSError, SQLAlchemyError):
            await self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


class FileLock:
    """An exclusive, non-blocking ``flock`` on ``path`` (created 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    async def still_held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def leader_lock(db: Database, data_path: Path, *, key: int, lock_file: str) -> LeaderLock:
    """SQLite serves one node: a file lock ``data_path/lock_file``; PostgreSQL: advisory ``key``."""
    if db.is_sqlite:
        return FileLock(data_path / lock_file)
    return AdvisoryLock(db.engine, key)
