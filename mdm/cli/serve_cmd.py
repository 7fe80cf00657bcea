"""``mdm serve``: run every enabled listener until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from mdm.cli.common import CliError, add_data_dir, config_from
from mdm.config import ConfigError
from mdm.db.engine import DatabaseUnavailable
from mdm.logs import setup_logging
from mdm.pki.ca import CAError
from mdm.pki.keys import KeyError_
from mdm.server.runtime import StartupError, running_pid, serve
from mdm.server.tls import TLSFilesError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the service (every enabled listener)")
    add_data_dir(p)
    p.add_argument("--json-logs", action="store_true", help="log JSON lines (logging.json)")
    p.set_defaults(func=run)
    r = sub.add_parser("reload", help="re-read certificates in a running server (SIGHUP)")
    add_data_dir(r)
    r.set_defaults(func=reload)


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    if args.json_logs:
        config.logging.json_lines = True
    setup_logging(config.logging.json_lines, config.logging.level)
    _event_loop_policy()
    try:
        asyncio.run(serve(config))
    except (StartupError, DatabaseUnavailable, CAError, KeyError_, TLSFilesError) as exc:
        raise CliError(str(exc)) from None
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    return 0


def reload(args: argparse.Namespace) -> int:
    config = config_from(args)
    pid = running_pid(config.data_path)
    if pid is None:
        raise CliError(f"no running server for {config.data_path} (no live pid in mdm.pid)")
    os.kill(pid, signal.SIGHUP)
    print(f"asked server (pid {pid}) to reload its certificates")
    return 0
