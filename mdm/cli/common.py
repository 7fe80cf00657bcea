"""Helpers shared by CLI commands: data-dir option, config loading, one-line errors."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from mdm.config import Config

# What each command module's ``register`` receives.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data directory (default: $MDM_DATA_DIR or /var/lib/mdm)",
    )


def config_from(args: argparse.Namespace, require_file: bool = True, check_server: bool = True) -> Config:
    """The data directory's configuration; with ``check_server``, a warning if a server runs there
    with a configuration that differs from it (mdm.cli.runcheck)."""
    # Imported here: `mdm --help` and the parsers need this module, not the configuration model.
    from mdm.config import ConfigError
    from mdm.config_sections import load as load_config

    try:
        config = load_config(args.data_dir, require_file=require_file)
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if check_server:
        from mdm.cli.runcheck import warn_if_server_differs

        warn_if_server_differs(config)
    return config
