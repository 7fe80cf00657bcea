#!/usr/bin/env python3
"""A wake-up sent alone, in a loop, without HTTP: the push dispatcher's CPU per push.

Developer tool behind "Session 20" in docs/PERFORMANCE.md. With APNs configured every single
enqueue owes a wake-up, and when they trickle in one at a time each wakes the dispatcher's worker
for a batch of one. Per iteration: owe one device a wake-up (``wake_many``), take it
(``_take``), send it through a transport that accepts at once and apply the answer
(``_deliver``), then the worker's idle look-up of the next due time (``_next_due``). The CPU of
each step is this process's (``time.process_time``), averaged over ``--count`` iterations after
50 of warm-up. It works on a prepared bench database (devices with push tokens; it deletes the
owed wake-ups first, then only adds and takes its own):

    python scripts/push-single-loop.py --database-url sqlite+aiosqlite:////tmp/b/mdm.sqlite3 --count 500
    python scripts/push-single-loop.py --database-url postgresql+asyncpg://postgres@127.0.0.1/delivery_bench
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime

from sqlalchemy import text

from mdm.db.engine import Database
from mdm.db.models import Protocol
from mdm.push.config import PushConfig
from mdm.push.dispatcher import PushDispatcher
from mdm.push.types import Outcome, PushResult, WakeTarget


class Accepting:
    """A ``PushTransport`` that accepts every push at once (the gateway is not measured)."""

    async def send(self, target: WakeTarget, *, expires: datetime | None = None) -> PushResult:
        return PushResult(Outcome.SENT, status=200)

    async def close(self) -> None:
        return None


async def main(url: str, count: int) -> None:
    db = Database(url)
    try:
        async with db.session() as session:
            ids = [row[0] for row in (await session.execute(text(
                "SELECT id FROM devices WHERE push_valid AND push_token IS NOT NULL AND push_token != '' "
                "ORDER BY id LIMIT 200"))).all()]
            await session.execute(text("DELETE FROM push_wakeups"))
            await session.commit()
        if not ids:
            raise SystemExit("no device with a push token: prepare the database with `mdm bench ios` first")
        dispatcher = PushDispatcher(db, PushConfig(), {Protocol.IOS: Accepting()})
        spent = {"owe": 0.0, "take": 0.0, "apply": 0.0, "next_due": 0.0}

        async def once(i: int) -> None:
            c0 = time.process_time()
            await dispatcher.wake_many([ids[i % len(ids)]], "command")
            c1 = time.process_time()
            _, targets = await dispatcher._take()
            c2 = time.process_time()
            if len(targets) != 1:
                raise SystemExit(f"took {len(targets)} wake-ups, expected 1")
            await dispatcher._deliver(targets)
            c3 = time.process_time()
            await dispatcher._next_due()
            c4 = time.process_time()
            for key, spent_s in zip(spent, (c1 - c0, c2 - c1, c3 - c2, c4 - c3), strict=True):
                spent[key] += spent_s

        for i in range(50):
            await once(i)
        spent = dict.fromkeys(spent, 0.0)
        for i in range(count):
            await once(i)
        print(" ".join(f"{key} {value * 1e6 / count:.0f} µs" for key, value in spent.items()), "per push")
    finally:
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.database_url, args.count))
