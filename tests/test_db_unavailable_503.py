"""A request that the database cannot serve (SQLite's write lock held past the busy timeout, the
connection pool exhausted, PostgreSQL refusing connections) is answered 503 with Retry-After and
one log line, never a 500 with a traceback; any other error is still a 500."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from mdm.server.middleware import request_context

Raiser = Callable[[], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Raiser], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(raise_it: Raiser) -> str:
        async def handler(_request: web.Request) -> web.Response:
            await raise_it()
            return web.Response(text="unreachable")

        app = web.Application(middlewares=[request_context])
        app.router.add_get("/x", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/x"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


async def test_a_locked_sqlite_database_is_a_503(
    serve: Callable[[Raiser], Awaitable[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})

    async def write() -> None:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))

    try:
        with caplog.at_level(logging.INFO):
            r = await _get(await serve(write))
    finally:
        holder.close()
        engine.dispose()
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.json()["error"]["code"] == "database_unavailable"
    assert "Traceback" not in caplog.text and not any(rec.exc_info for rec in caplog.records)
    assert "database" in caplog.text


async def test_an_exhausted_pool_is_a_503(serve: Callable[[Raiser], Awaitable[str]], tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}", pool_size=1, max_overflow=0,
                                 pool_timeout=0.1)
    held = await engine.connect()

    async def checkout() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        r = await _get(await serve(checkout))
    finally:
        await held.close()
        await engine.dispose()
    assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"


async def test_a_refused_postgresql_connection_is_a_503(serve: Callable[[Raiser], Awaitable[str]]) -> None:
    engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")

    async def connect() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        r = await _get(await serve(connect))
    finally:
        await engine.dispose()
    assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"


async def test_any_other_error_is_still_a_500(serve: Callable[[Raiser], Awaitable[str]]) -> None:
    async def broken() -> None:
        raise RuntimeError("a bug")

    r = await _get(await serve(broken))
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
