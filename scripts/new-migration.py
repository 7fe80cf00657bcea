#!/usr/bin/env python3
"""Developer tool: autogenerate an Alembic revision by diffing the models against a scratch
SQLite database migrated to head. Review the generated file before committing it.

    .venv/bin/python scripts/new-migration.py "add enrollments" [--rev-id 0004]
"""

import argparse
import asyncio
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy.engine import Connection

from mdm.db.engine import Database
from mdm.db.migrate import alembic_config, upgrade


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("message")
    parser.add_argument("--rev-id")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'scratch.db'}")
        await upgrade(db)

        def _gen(conn: Connection) -> None:
            command.revision(alembic_config(conn), message=args.message, autogenerate=True,
                             rev_id=args.rev_id)

        async with db.engine.begin() as conn:
            await conn.run_sync(_gen)
        await db.close()


asyncio.run(main())
