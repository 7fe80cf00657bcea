"""Cross-replica invalidation of the queue hint on PostgreSQL: every enqueue sends
``NOTIFY mdm_ios_queue, '<device ids>'`` in its transaction (``state.py``); this worker LISTENs on
a dedicated connection and clears those devices' hints. After a (re)connect every hint is
cleared, since notifications sent while disconnected are lost."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.engine import make_url

from mdm.ios.state import NOTIFY_CHANNEL, QueueHint

log = logging.getLogger("mdm.ios.notify")


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _on_notify(hint: QueueHint) -> Any:
    def callback(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for item in payload.split(","):
            if item.isdigit():
                hint.invalidate(int(item))

    return callback


async def listen(url: str, hint: QueueHint, *, retry_seconds: float = 2.0) -> None:
    """Run until cancelled; reconnects with back-off."""
    import asyncpg

    delay = retry_seconds
    while True:
        conn = None
        try:
            conn = await asyncpg.connect(asyncpg_dsn(url))
            await conn.add_listener(NOTIFY_CHANNEL, _on_notify(hint))
            hint.clear()
            delay = retry_seconds
            log.info("listening for queue notifications from other replicas")
            closed = asyncio.Event()
            conn.add_termination_listener(lambda _conn, event=closed: event.set())
            while not closed.is_set():
                try:
                    await asyncio.wait_for(closed.wait(), timeout=30.0)
                except TimeoutError:
                    await conn.execute("SELECT 1")  # a dead TCP connection raises here
            log.warning("queue notification connection closed; reconnecting")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("queue notifications unavailable (%s); retrying in %.0fs", exc, delay)
            hint.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()
