"""``mdm serve``: run every enabled listener until SIGTERM/SIGINT. ``mdm reload``: have the running
server re-read ``mdm.toml`` and its certificates (SIGHUP), then print what it applied."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mdm.cli.common import CliError, Subparsers, add_data_dir, config_from

if TYPE_CHECKING:
    from mdm.config import Config


def register(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="run the service (every enabled listener)")
    add_data_dir(p)
    p.add_argument("--json-logs", action="store_true", help="log JSON lines (logging.json)")
    # The push worker process the server starts itself ([push] worker = "process"): its
    # configuration comes from the server on stdin, not from --data-dir.
    p.add_argument("--push-worker", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)
    r = sub.add_parser(
        "reload",
        help="re-read certificates in a running server (SIGHUP)",
        description="Have the running server re-read mdm.toml (applying what can change at run time "
        "and naming the keys that need a restart) and its certificates (SIGHUP), and print its answer. "
        "A file with an error is refused: the server keeps its configuration. Exit 1 if refused.",
    )
    add_data_dir(r)
    r.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait for the server's answer (default 15)"
    )
    r.set_defaults(func=reload)


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _with_flags(config: Config, args: argparse.Namespace) -> Config:
    if args.json_logs:
        config.logging.json_lines = True
    return config


def run(args: argparse.Namespace) -> int:
    if args.push_worker:
        return _push_worker()
    # The server stack is imported here: `mdm reload` (same module) does not need it.
    from mdm.config import ConfigError
    from mdm.config_sections import load as load_config
    from mdm.db.engine import DatabaseUnavailable
    from mdm.logs import setup_logging
    from mdm.pki.ca import CAError
    from mdm.pki.keys import KeyError_
    from mdm.plugins import PLUGINS
    from mdm.server.runtime import StartupError, serve
    from mdm.server.tls import TLSFilesError

    config = _with_flags(config_from(args, check_server=False), args)
    setup_logging(config.logging.json_lines, config.logging.level)
    _event_loop_policy()

    def again() -> Config:  # a reload reads the file and the environment again, with the same flags
        return _with_flags(load_config(args.data_dir, require_file=True), args)

    overrides = ["logging.json"] if args.json_logs else []
    try:
        asyncio.run(serve(config, PLUGINS, again, overrides))
    except (StartupError, DatabaseUnavailable, CAError, KeyError_, TLSFilesError) as exc:
        raise CliError(str(exc)) from None
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    return 0


def _push_worker() -> int:
    from mdm.config_sections import SECTIONS
    from mdm.plugins import PUSH_WORKER
    from mdm.push import worker_process

    _event_loop_policy()
    return asyncio.run(worker_process.run(PUSH_WORKER, SECTIONS))


def reload(args: argparse.Namespace) -> int:
    from mdm.cli.reload_cmd import run_reload
    from mdm.config import DEFAULT_DATA_DIR

    # Not validated here: judging an edited file is the server's part (it says what is wrong).
    return run_reload(Path(args.data_dir or os.environ.get("MDM_DATA_DIR") or DEFAULT_DATA_DIR), args.timeout)
