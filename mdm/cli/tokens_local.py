"""``mdm tokens create --local NAME --scope ...``: mint an API token on the server's machine.

The way back in when the admin token is lost: it opens the database named by the data
directory's configuration directly (no API, so no token is needed, and no CA), creates the token
through ``mdm.core.tokens`` and prints it once. Whoever can read the data directory can do this,
which is no more than they could before (the CA keys and the database are there).

Importing this module is cheap: the database code is imported only when ``--local`` is used.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from typing import Any

from mdm.cli.common import CliError

# Same rule as the API's token names (they are path parameters of DELETE /tokens/{name}).
NAME_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,255}$")


def add_local_option(p: argparse.ArgumentParser) -> None:
    """``--local`` on the ``tokens create`` parser; without it the API handler runs as before."""
    p.add_argument(
        "--local",
        action="store_true",
        help="on the server's machine: write the token into the database of --data-dir directly "
        "(no API token needed, the CA is not touched), e.g. when the admin token is lost",
    )
    remote: Callable[[argparse.Namespace], int] = p.get_default("func")

    def run(args: argparse.Namespace) -> int:
        return run_local(args) if args.local else remote(args)

    p.set_defaults(func=run)


def run_local(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from mdm.cli import output
    from mdm.cli.common import config_from
    from mdm.core import tokens
    from mdm.core.errors import Conflict, InvalidArgument
    from mdm.db.engine import DatabaseUnavailable

    if args.url or args.token:
        raise CliError("--local works on the data directory: --url and --token do not apply", exit_code=2)
    if not NAME_RE.match(args.name):
        raise CliError(
            f"token name {args.name!r}: 1-255 letters, digits and . _ : @ - only", exit_code=2
        )
    try:
        scopes = tokens.validate_scopes(args.scope)
    except InvalidArgument as exc:
        allowed = ", ".join(sorted(tokens.SCOPES))
        raise CliError(f"{exc.message} (allowed: {allowed})", exit_code=2) from None
    config = config_from(args)
    if not config.database.url and not (config.data_path / "mdm.sqlite3").exists():
        data = config.data_path
        raise CliError(f"no database in {data}: run `mdm init --data-dir {data}` first")
    from mdm.core import audit

    try:
        with audit.local_action("tokens create --local", name=args.name, scopes=scopes):
            row, secret = asyncio.run(_create(config, args.name, scopes))
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        raise CliError(
            f"cannot write the token to the database ({first}); has `mdm init` run for {config.data_path}?"
        ) from None
    except Conflict:
        raise CliError(
            f"a token named {args.name!r} already exists; nothing was changed. Choose another name "
            f"(`mdm tokens list` shows them; `mdm tokens revoke {args.name}` retires the old one)"
        ) from None
    except DatabaseUnavailable as exc:
        raise CliError(str(exc)) from None
    if args.json:
        output.emit_json({"name": row["name"], "scopes": row["scopes"], "token": secret})
        return 0
    print(f"created token {args.name!r} with scopes {', '.join(scopes)} in {row['database']}; "
          "the secret is shown once:\n")
    print(f"    {secret}\n")
    print("Use it with `mdm login --token TOKEN` (or MDM_API_TOKEN).")
    return 0


async def _create(config: Any, name: str, scopes: list[str]) -> tuple[dict[str, Any], str]:
    from mdm.core import tokens
    from mdm.db.engine import Database

    db = Database(config.database_url, config.database.pool_size)
    try:
        await db.check()
        async with db.transaction() as session:
            row, secret = await tokens.create(session, name, scopes)
            created = {"name": row.name, "scopes": row.scopes.split(), "database": db.safe_url}
        return created, secret
    finally:
        await db.close()
