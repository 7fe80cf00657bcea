"""Cross-replica invalidation on PostgreSQL, the listening side: one dedicated connection LISTENs
to some channels whose payloads are comma-separated device ids (``store_identity.notify_devices``
sends them) and hands each id to the channel's handler — for bindings, ``BindingCache.drop_device``.

Notifications sent while disconnected are lost: ``on_connection(True)`` is called after each
(re)connect and ``on_connection(False)`` when the connection is lost, so that the caller can
clear what it caches (and cache nothing while deaf).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger("mdm.core.identity_notify")

DeviceHandler = Callable[[int], None]


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _callback(handler: DeviceHandler) -> Callable[[Any, int, str, str], None]:
    def callback(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for item in payload.split(","):
            if item.isdigit():
                handler(int(item))

    return callback


async def listen(
    url: str,
    handlers: Mapping[str, DeviceHandler],
    on_connection: Callable[[bool], None],
    *,
    what: str,
    logger: logging.Logger = log,
    retry_seconds: float = 2.0,
) -> None:
    """Run until cancelled; reconnects with back-off. ``what`` names the notifications in logs."""
    import asyncpg

    delay = retry_seconds
    while True:
        listener = None
        try:
            listener = await asyncpg.connect(asyncpg_dsn(url))
            for channel, handler in handlers.items():
                await listener.add_listener(channel, _callback(handler))
            on_connection(True)
            delay = retry_seconds
            logger.info("listening for %s notifications from other replicas", what)
            closed = asyncio.Event()
            listener.add_termination_listener(lambda _listener, event=closed: event.set())
            while not closed.is_set():
                try:
                    await asyncio.wait_for(closed.wait(), timeout=30.0)
                except TimeoutError:
                    await listener.execute("SELECT 1")  # a dead TCP connection raises here
            logger.warning("%s notification connection closed; reconnecting", what)
            on_connection(False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("%s notifications unavailable (%s); retrying in %.0fs", what, exc, delay)
            on_connection(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()
