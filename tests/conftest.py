"""Shared fixtures.

Engine: SQLite by default; PostgreSQL when ``MDM_TEST_DATABASE_URL`` is set (for example
``postgresql+asyncpg://postgres@127.0.0.1:5432/mdm_test``; the database is created if missing).
The schema is migrated once per session; each test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from ios_support import Phone, enrolled_phone
from sqlalchemy import text
from sqlalchemy.engine import make_url

from mdm.config import Config
from mdm.core import tokens
from mdm.db import migrate
from mdm.db.engine import Database
from mdm.plugins import PLUGINS
from mdm.schema import metadata
from mdm.server.runtime import Server, open_context
from mdm.testing import make_data_dir, make_pki


def _per_worker(url: str) -> str:
    """Under pytest-xdist each worker gets a PostgreSQL database of its own (``mdm_test_gw0``, ...):
    every session drops and re-migrates its schema and every test truncates all tables."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    u = make_url(url)
    return u.set(database=f"{u.database}_{worker}").render_as_string(hide_password=False)


# Set back into the environment, so that modules and subprocesses reading it see the worker's own.
if os.environ.get("MDM_TEST_DATABASE_URL"):
    os.environ["MDM_TEST_DATABASE_URL"] = _per_worker(os.environ["MDM_TEST_DATABASE_URL"])
PG_URL = os.environ.get("MDM_TEST_DATABASE_URL", "")
FIXTURES = Path(__file__).parent / "fixtures"


def pytest_report_header(config: pytest.Config) -> str:
    return f"mdm database engine: {'postgresql ' + make_url(PG_URL).database if PG_URL else 'sqlite'}"


async def _ensure_pg_database(url: str) -> None:
    import asyncpg

    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres",
        password=u.password, database="postgres",
    )
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", u.database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{u.database}"')
    finally:
        await conn.close()


async def _migrate_fresh(url: str) -> None:
    if url.startswith("postgresql"):
        await _ensure_pg_database(url)
    db = Database(url)
    try:
        if url.startswith("postgresql"):
            async with db.engine.begin() as conn:
                await conn.execute(text("DROP SCHEMA public CASCADE"))
                await conn.execute(text("CREATE SCHEMA public"))
        await migrate.upgrade(db)
    finally:
        await db.close()


@pytest.fixture(scope="session")
def pki_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki-template")
    make_pki(directory)
    return directory


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db-template") / "mdm.sqlite3"
    asyncio.run(_migrate_fresh(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_migrated() -> str:
    asyncio.run(_migrate_fresh(PG_URL))
    return PG_URL


async def _truncate_all(url: str) -> None:
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await db.close()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if PG_URL:
        url = request.getfixturevalue("pg_migrated")
        asyncio.run(_truncate_all(url))
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "data" / "mdm.sqlite3"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def extra_config() -> str:
    """Override in a test module to append TOML to the test configuration."""
    return ""


@pytest.fixture
def config(tmp_path: Path, pki_template: Path, database_url: str, extra_config: str) -> Config:
    return make_data_dir(tmp_path / "data", pki_template, database_url, extra_config)


@pytest.fixture
async def db(config: Config) -> AsyncIterator[Database]:
    database = Database(config.database_url)
    yield database
    await database.close()


@pytest.fixture
async def server(config: Config) -> AsyncIterator[Server]:
    ctx = await open_context(config)
    srv = Server(ctx, PLUGINS)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def listener_url(server: Server, listener: str, *, tls: bool | None = None) -> str:
    for binding, port in server.bound:
        if binding.listener == listener and (tls is None or binding.tls == tls):
            return f"{'https' if binding.tls else 'http'}://127.0.0.1:{port}"
    raise LookupError(f"listener {listener} (tls={tls}) is not running")


def client_ssl_context(config: Config) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(config.ca_dir / "root.pem"))
    return ctx


@pytest.fixture
async def ios(server: Server, config: Config) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTPS client of the iOS listener (devices identify themselves per request)."""
    async with httpx.AsyncClient(
        base_url=listener_url(server, "ios"), verify=client_ssl_context(config), timeout=30
    ) as client:
        yield client


@pytest.fixture
async def phone(server: Server, db: Database, ios: httpx.AsyncClient) -> Phone:
    """An iOS device enrolled on the running server (a module needing another kind of phone
    defines its own ``phone``)."""
    return await enrolled_phone(server, db, ios)


@pytest.fixture
async def admin_token(db: Database) -> str:
    async with db.transaction() as session:
        _, token = await tokens.create(session, "test-admin", ["admin"])
    return token


@pytest.fixture
async def api(server: Server, config: Config, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTPS client of the admin API, authenticated with an admin token."""
    async with httpx.AsyncClient(
        base_url=listener_url(server, "admin"),
        verify=client_ssl_context(config),
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def default_gc() -> Iterator[tuple[int, int, int]]:
    """The collector as a process starts (what the bench found before), restored after."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(*thresholds)
