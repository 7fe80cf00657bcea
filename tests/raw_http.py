"""A raw HTTP/1.1 exchange over a real (TLS or plain) socket, for tests that must send what no HTTP
client library would: lying Content-Length, broken chunked framing, bare bytes, a client that
leaves mid-upload. No server behaviour is imitated here."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


@dataclass
class Exchange:
    data: bytes = b""
    closed_by_server: bool = False  # EOF before our read timeout
    statuses: list[int] = field(default_factory=list)


def statuses(data: bytes) -> list[int]:
    """Status codes of the responses in a byte stream (the status lines at response starts)."""
    found = []
    for match in _STATUS_LINE.finditer(data):
        start = match.start()
        if start == 0 or data[start - 2 : start] == b"\r\n" or data[start - 1 : start] == b"\n":
            found.append(int(match.group(1)))
    return found


async def exchange(
    port: int,
    payload: bytes,
    *,
    tls: ssl.SSLContext | None = None,
    read_timeout: float = 2.0,
    leave_after: float | None = None,
    host: str = "127.0.0.1",
    local_address: str | None = None,
) -> Exchange:
    """Send ``payload`` and read until the server closes or ``read_timeout`` passes. With
    ``leave_after``, close our side that many seconds after sending, without reading (a client
    dropping mid-upload)."""
    reader, writer = await asyncio.open_connection(
        host,
        port,
        ssl=tls,
        server_hostname="localhost" if tls else None,
        local_addr=(local_address, 0) if local_address else None,
    )
    result = Exchange()
    try:
        if payload:
            writer.write(payload)
            await writer.drain()
        if leave_after is not None:
            await asyncio.sleep(leave_after)
            return result
        chunks = []
        try:
            async with asyncio.timeout(read_timeout):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
            result.closed_by_server = True
        except TimeoutError:
            pass
        except (ConnectionError, ssl.SSLError):
            result.closed_by_server = True
        result.data = b"".join(chunks)
        result.statuses = statuses(result.data)
        return result
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def db_rows(db: Any, skip: tuple[str, ...] = ("events",)) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table but ``skip``, read with plain SQL (``SELECT *``) so that the
    comparison follows the database as migrated, for "a rejected request changed nothing"."""
    from sqlalchemy import text

    from mdm.schema import metadata

    out: dict[str, list[tuple[str, ...]]] = {}
    async with db.session() as session:
        for table in metadata.sorted_tables:
            if table.name not in skip:
                rows = (await session.execute(text(f'SELECT * FROM "{table.name}"'))).all()
                out[table.name] = sorted(tuple(repr(v) for v in row) for row in rows)
    return out
