"""Cross-replica invalidation on PostgreSQL: every enqueue sends ``NOTIFY mdm_ios_queue,
'<device ids>'`` in its transaction, and every transaction that ends or changes a device's binding
(delete, check-out, removal, re-binding) sends ``NOTIFY mdm_ios_binding, '<device ids>'``
(``state.py``). This worker LISTENs to both on a dedicated connection and clears those devices'
queue hints and cached bindings. After a (re)connect both caches are cleared, since notifications
sent while disconnected are lost."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.engine import make_url

from mdm.ios.identity import BindingCache
from mdm.ios.state import BINDING_CHANNEL, NOTIFY_CHANNEL, QueueHint

log = logging.getLogger("mdm.ios.notify")


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _on_notify(hint: QueueHint) -> Any:
    def callback(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for item in payload.split(","):
            if item.isdigit():
                hint.invalidate(int(item))

    return callback


def _on_binding(bindings: BindingCache) -> Any:
    def callback(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for item in payload.split(","):
            if item.isdigit():
                bindings.drop_device(int(item))

    return callback


def _forget(hint: QueueHint, bindings: BindingCache | None, *, listening: bool) -> None:
    hint.clear()
    if bindings is not None:
        bindings.set_live(listening)  # not listening: no binding is cached until we are again


async def listen(
    url: str, hint: QueueHint, bindings: BindingCache | None = None, *, retry_seconds: float = 2.0
) -> None:
    """Run until cancelled; reconnects with back-off."""
    import asyncpg

    delay = retry_seconds
    while True:
        conn = None
        try:
            conn = await asyncpg.connect(asyncpg_dsn(url))
            await conn.add_listener(NOTIFY_CHANNEL, _on_notify(hint))
            if bindings is not None:
                await conn.add_listener(BINDING_CHANNEL, _on_binding(bindings))
            _forget(hint, bindings, listening=True)
            delay = retry_seconds
            log.info("listening for queue and binding notifications from other replicas")
            closed = asyncio.Event()
            conn.add_termination_listener(lambda _conn, event=closed: event.set())
            while not closed.is_set():
                try:
                    await asyncio.wait_for(closed.wait(), timeout=30.0)
                except TimeoutError:
                    await conn.execute("SELECT 1")  # a dead TCP connection raises here
            log.warning("queue notification connection closed; reconnecting")
            _forget(hint, bindings, listening=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("queue notifications unavailable (%s); retrying in %.0fs", exc, delay)
            _forget(hint, bindings, listening=False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()
