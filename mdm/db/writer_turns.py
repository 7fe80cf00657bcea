"""Turns at SQLite's write lock between the server's bulk batches and the push worker process.

SQLite has one write lock per file and no queue: a writer that finds it taken sleeps in SQLite's
busy handler (sleeps growing to 100 ms) and tries again, and whoever asks first after it is freed
gets it. The server's bulk worker runs its batches back to back (each 30-70 ms with the lock,
a fraction of a millisecond between them), so the push worker process, the other writer, got the
lock rarely while a bulk operation was queuing: at 10^6 devices its takes and applies waited
1.0-2.7 s each and most wake-ups went out only after the queuing ended (docs/PERFORMANCE.md,
session 14).

A turn is an ``flock`` on a small file next to the database (``<database>-turns``):

- the push worker holds it exclusively around each of its write transactions (``mine``): from
  before it waits for the lock until it committed. That is its "I am waiting" signal, and it
  costs one system call when nobody looks;
- the bulk worker, before each batch (``give_way``), tries a shared lock without waiting: free,
  it goes on at once (one system call per batch); held, it waits until the push worker's
  transaction is over (checking every ``POLL_SECONDS``), at most ``limit`` seconds (a stuck
  worker delays no batch longer than that).

So the push worker waits at most for the batch in progress, and the bulk worker resumes as soon
as the worker committed. Nothing here decides correctness: both still take SQLite's lock (BEGIN
IMMEDIATE) for their writes; a turn only orders who asks for it. The lock is released by the
kernel when its holder dies. PostgreSQL (row locks, several writers) and in-memory SQLite (one
process) need none: ``for_url`` answers None.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

SUFFIX = "-turns"
POLL_SECONDS = 0.001  # how often a bulk worker that gives way looks again
LIMIT_SECONDS = 1.0  # the longest a batch waits for the push worker's transaction


class WriterTurns:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._mine = 0  # this process's write transactions inside ``mine`` (one lock for them all)
        self._unusable = False
        self.gave_way = 0  # batches that waited (for tests and logs)
        self.waited = 0.0  # seconds they waited in all

    @classmethod
    def for_url(cls, url: str) -> WriterTurns | None:
        """The turns of a SQLite file database; None for PostgreSQL and in-memory SQLite."""
        parsed = make_url(url)
        if not parsed.drivername.startswith("sqlite"):
            return None
        database = parsed.database or ""
        if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
            return None
        return cls(database + SUFFIX)

    def _file(self) -> int | None:
        """The turns file, opened once; None when it cannot be (a read-only directory): then
        nobody takes turns, as before them, and the writes go on."""
        if self._fd is None and not self._unusable:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self._unusable = True
                log.warning("SQLite writer turns off: %s cannot be opened (%s)", self.path, exc)
        return self._fd

    @contextlib.asynccontextmanager
    async def mine(self) -> AsyncIterator[None]:
        """The push worker: hold the turn while this block waits for and holds the write lock."""
        fd = self._file() if self._mine == 0 else None
        if fd is not None:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:  # a bulk worker looking at this instant (a system call)
                    await asyncio.sleep(POLL_SECONDS)
        self._mine += 1
        try:
            yield
        finally:
            self._mine -= 1
            if self._mine == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    async def give_way(self, limit: float = LIMIT_SECONDS) -> float:
        """The bulk worker, before a batch: wait while another process holds the turn, at most
        ``limit`` seconds; the seconds waited (0.0 when nobody held it)."""
        fd = self._file()
        if fd is None:
            return 0.0
        started: float | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                now = time.monotonic()
                if started is None:
                    started = now
                elif now - started >= limit:
                    break
                await asyncio.sleep(POLL_SECONDS)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            break
        if started is None:
            return 0.0
        waited = time.monotonic() - started
        self.gave_way += 1
        self.waited += waited
        return waited

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
