"""SQL of the identity binding seam (``mdm.core.identity*``): the NOTIFY that tells other
replicas which devices' cached state to drop."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.engine import Connection

NOTIFY_STMT = text("SELECT pg_notify(:channel, :payload)")
# NOTIFY payloads must stay below 8000 bytes.
MAX_PAYLOAD = 7000


def chunks(items: list[str], size: int) -> list[str]:
    """Comma-joined runs of ``items``, each at most ``size`` characters (one item may exceed it)."""
    out: list[str] = []
    current: list[str] = []
    length = 0
    for item in items:
        if current and length + len(item) + 1 > size:
            out.append(",".join(current))
            current, length = [], 0
        current.append(item)
        length += len(item) + 1
    if current:
        out.append(",".join(current))
    return out


def notify_devices(connection: Connection, channel: str, device_ids: Iterable[int]) -> None:
    """``NOTIFY channel, '<device ids>'`` in the connection's transaction (sent at commit, dropped
    on rollback); PostgreSQL only, nothing elsewhere."""
    if connection.dialect.name != "postgresql":
        return
    for chunk in chunks([str(d) for d in sorted(device_ids)], MAX_PAYLOAD):
        connection.execute(NOTIFY_STMT, {"channel": channel, "payload": chunk})
