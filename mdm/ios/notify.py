"""Cross-replica invalidation on PostgreSQL: every enqueue sends ``NOTIFY mdm_ios_queue,
'<device ids>'`` in its transaction (``state.py``), and every transaction that ends or changes a
device's binding (delete, check-out, removal, re-binding) sends ``NOTIFY mdm_ios_binding,
'<device ids>'`` (``core.identity_invalidation``). This worker LISTENs to both on a dedicated
connection (``core.identity_notify``) and clears those devices' queue hints and cached bindings.
After a (re)connect both caches are cleared, since notifications sent while disconnected are lost;
while disconnected no binding is cached."""

from __future__ import annotations

import logging

from mdm.core.identity import BindingCache
from mdm.core.identity_notify import DeviceHandler, asyncpg_dsn
from mdm.core.identity_notify import listen as listen_for
from mdm.ios.state import BINDING_CHANNEL, NOTIFY_CHANNEL, QueueHint

__all__ = ["asyncpg_dsn", "listen"]

log = logging.getLogger("mdm.ios.notify")


async def listen(
    url: str, hint: QueueHint, bindings: BindingCache | None = None, *, retry_seconds: float = 2.0
) -> None:
    """Run until cancelled; reconnects with back-off."""
    handlers: dict[str, DeviceHandler] = {NOTIFY_CHANNEL: hint.invalidate}
    if bindings is not None:
        handlers[BINDING_CHANNEL] = bindings.drop_device

    def on_connection(listening: bool) -> None:
        hint.clear()
        if bindings is not None:
            bindings.set_live(listening)  # not listening: no binding is cached until we are again

    await listen_for(
        url, handlers, on_connection, what="queue and binding", logger=log, retry_seconds=retry_seconds
    )
