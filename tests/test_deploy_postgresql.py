"""``deploy/postgresql/mdm.conf`` names settings this PostgreSQL knows, with values it accepts: a
typo in a setting's name stops a cluster from starting, so it is checked against the server the
tests run on (each value by ``pg_settings``' own parser where the setting may be set in a session,
by its type and unit otherwise)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text

from mdm.db.engine import Database

CONF = Path(__file__).resolve().parents[1] / "deploy" / "postgresql" / "mdm.conf"


def _settings() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in CONF.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, value = (part.strip() for part in line.split("=", 1))
            found[name] = value
    return found


def test_the_file_sets_what_a_fleet_needs() -> None:
    settings = _settings()
    assert {"shared_buffers", "max_wal_size", "checkpoint_timeout", "autovacuum"} <= set(settings)
    assert settings["autovacuum"] == "on"


async def test_every_setting_is_known_and_its_value_accepted(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's settings")
    async with db.transaction() as session:
        for name, value in _settings().items():
            row = (await session.execute(
                text("SELECT vartype, context, enumvals FROM pg_settings WHERE name = :n"), {"n": name}
            )).first()
            assert row is not None, f"{name}: not a PostgreSQL setting"
            vartype, context, enumvals = row
            if context in ("user", "superuser"):
                await session.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
            elif vartype == "integer":  # a size or a time with its unit
                assert re.fullmatch(r"\d+(kB|MB|GB|TB|ms|s|min|h|d)?", value), (name, value)
            elif vartype == "bool":
                assert value in ("on", "off"), (name, value)
            elif vartype == "enum":
                assert value in enumvals, (name, value, enumvals)
