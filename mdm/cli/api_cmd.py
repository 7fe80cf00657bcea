"""What every command that talks to the admin API shares: parser leaves with the connection
options, the runner that opens the client, pagination, confirmation, and look-ups by name.

Light on purpose (argparse and the CLI's own small modules): parsers are built from it for
``--help`` before any command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from mdm.cli import output
from mdm.cli.client import ApiClient, server_options, settings_from
from mdm.cli.common import CliError

API = "/api/v1"
Handler = Callable[[argparse.Namespace, ApiClient], int]
_COMMON: list[argparse.ArgumentParser] = []


def common() -> argparse.ArgumentParser:
    """The connection options (--url, --token, --data-dir, --json), one parent parser for all."""
    if not _COMMON:
        _COMMON.append(server_options())
    return _COMMON[0]


def leaf(parent: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    """A subcommand that runs ``handler`` with a connected client."""
    p: argparse.ArgumentParser = parent.add_parser(name, parents=[common()], help=help, description=help)
    p.set_defaults(func=runner(handler))
    return p


def actions(sub: Any, name: str, help: str) -> Any:
    """A command group (``mdm NAME ACTION``)."""
    return sub.add_parser(name, help=help, description=help).add_subparsers(
        dest="action", metavar="ACTION", required=True
    )


def runner(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            with ApiClient(settings_from(args)) as client:
                return handler(args, client)
        except BrokenPipeError:
            # The reader (head, less) went away: stop quietly, as a Unix filter does.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

    return run


def paging(p: argparse.ArgumentParser, default: int = 50) -> None:
    p.add_argument("--limit", type=int, default=default, help="page size (1..500)")
    p.add_argument("--cursor", help="start at this cursor (next_cursor of the previous page)")
    p.add_argument("--all-pages", action="store_true", help="follow the cursor through every page")


def list_page(
    args: argparse.Namespace, client: ApiClient, path: str, params: dict[str, Any]
) -> dict[str, Any]:
    """One page (``--limit``/``--cursor``), or every page with ``--all-pages``."""
    params = {**params, "limit": args.limit, "cursor": args.cursor}
    if not args.all_pages:
        page: dict[str, Any] = client.get(path, **params)
        return page
    items: list[Any] = []
    for page in client.pages(path, params):
        items.extend(page["items"])
    return {"items": items, "next_cursor": None}


def every(client: ApiClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paginated list."""
    items: list[dict[str, Any]] = []
    for page in client.pages(path, {**params, "limit": 500}):
        items.extend(page["items"])
    return items


def more_hint(page: dict[str, Any], noun: str) -> None:
    if page.get("next_cursor"):
        output.note(f"more {noun}: --cursor {page['next_cursor']} for the next page, or --all-pages")


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, ``--yes`` is required. Declining changes nothing (exit 1)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question} Not confirmed: pass --yes (no terminal to ask on)", exit_code=2)
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CliError("not confirmed; nothing changed")


def positive_id(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise CliError(f"{what} {text!r}: expected a positive integer id", exit_code=2)
    return int(text)
