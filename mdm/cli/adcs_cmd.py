"""``mdm adcs``: the AD CS web enrollment source (``docs/PKI.md``): import and show the Enrollment
Agent identity, check the login to certsrv. Never prints a key, a password or a passphrase."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

from mdm.cli.api_cmd import actions
from mdm.cli.common import CliError, Subparsers, add_data_dir, config_from


def _password(args: argparse.Namespace) -> bytes | None:
    if args.password_file:
        try:
            return Path(args.password_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise CliError(f"--password-file: cannot read {args.password_file}: {exc.strerror}", 2) from None
    return str(args.password).encode() if args.password is not None else None


def run_import(args: argparse.Namespace) -> int:
    from mdm.adcs import agent
    from mdm.adcs.source import agent_passphrase
    from mdm.config import ConfigError

    config = config_from(args, check_server=False)
    try:
        data = Path(args.p12).read_bytes()
    except OSError as exc:
        raise CliError(f"--p12: cannot read {args.p12}: {exc.strerror}", 2) from None
    try:
        identity = agent.read_pkcs12(data, _password(args))
        folder = agent.store(config.data_path, identity, agent_passphrase(config))
    except (agent.AgentError, ConfigError) as exc:
        raise CliError(str(exc), 2) from None
    print(f"Enrollment Agent {identity.subject} stored in {folder} (key encrypted), "
          f"valid until {identity.not_after:%Y-%m-%d}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from mdm.adcs import agent
    from mdm.adcs.source import agent_passphrase
    from mdm.config import ConfigError

    config = config_from(args, check_server=False)
    try:
        identity = agent.load(config.data_path, agent_passphrase(config))
    except (agent.AgentError, ConfigError) as exc:
        raise CliError(str(exc), 1) from None
    cert = identity.certificate
    days = (identity.not_after - datetime.now(UTC)).days
    print(f"subject:    {identity.subject}")
    print(f"issuer:     {cert.issuer.rfc4514_string()}")
    print(f"serial:     {cert.serial_number:x}")
    print(f"valid:      {cert.not_valid_before_utc:%Y-%m-%d} .. {identity.not_after:%Y-%m-%d} "
          f"({days} days left)")
    print("EKU:        Certificate Request Agent (1.3.6.1.4.1.311.20.2.1)")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from mdm.adcs.source import build_client
    from mdm.config import ConfigError
    from mdm.pki.source_errors import SourceUnavailable

    config = config_from(args, check_server=False)
    try:
        client, label = build_client(config)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None

    async def check() -> str:
        try:
            return await client.check()
        finally:
            await client.aclose()

    try:
        title = asyncio.run(check())
    except SourceUnavailable as exc:
        raise CliError(exc.message, 1) from None
    print(f"OK: {client.base_url}/ answered as {label}: {title}")
    return 0


def register(sub: Subparsers) -> None:
    adcs = actions(sub, "adcs", "AD CS web enrollment: the Enrollment Agent, the login to certsrv")
    agent_cmd = adcs.add_parser("agent", help="the Enrollment Agent certificate").add_subparsers(
        dest="agent_action", metavar="ACTION", required=True)
    p = agent_cmd.add_parser("import", help="store the Enrollment Agent certificate and key (key encrypted)")
    p.add_argument("--p12", required=True, metavar="FILE", help="PKCS#12 with the certificate and its key")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--password", metavar="P", help="the PKCS#12 password")
    group.add_argument("--password-file", metavar="FILE", help="a file holding the PKCS#12 password")
    add_data_dir(p)
    p.set_defaults(func=run_import)
    p = agent_cmd.add_parser("show", help="the stored Enrollment Agent certificate, checked")
    add_data_dir(p)
    p.set_defaults(func=run_show)
    p = adcs.add_parser("check", help="GET /certsrv/ with the configured login (submits nothing)")
    add_data_dir(p)
    p.set_defaults(func=run_check)
