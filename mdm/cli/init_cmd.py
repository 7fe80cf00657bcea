"""``mdm init``: config, database, CA, server certificates, the admin token and, until Apple's
push certificate is configured, a development push identity. Idempotent: a second run changes
nothing and says so; ``--reissue-certs`` issues new server certificates from the existing CA (after
a host name change); ``--force`` regenerates the CA, the server certificates and the admin token
(the config file and the push identity are always kept).

Before writing anything it checks that devices can reach the public host name (``hostcheck``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path

import tomlkit

from mdm.cli import hostcheck
from mdm.cli.common import CliError, Subparsers, add_data_dir
from mdm.config import CONFIG_FILE, CONFIG_TEMPLATE, Config, ConfigError
from mdm.config_sections import load as load_config
from mdm.core import audit, tokens
from mdm.core.errors import InvalidArgument
from mdm.db import migrate
from mdm.db.engine import Database, DatabaseUnavailable
from mdm.pki.ca import CAError, CertificateAuthority
from mdm.pki.crl import crl_url_for
from mdm.pki.keys import KeyError_
from mdm.pki.slots import SLOTS, issue_server_certificate, slot_exists
from mdm.push.config import apns_config
from mdm.push.topic import DEVELOPMENT_HOWTO, create_development_identity

ADMIN_TOKEN_NAME = "admin"  # noqa: S105 - the token's name, not its secret


def register(sub: Subparsers) -> None:
    p = sub.add_parser("init", help="prepare a data directory (config, database, CA, certificates, token)")
    add_data_dir(p)
    p.add_argument("--hostname", help="public host name (default: $MDM_HOSTNAME or this host's FQDN)")
    p.add_argument(
        "--no-resolve-check",
        action="store_true",
        help="accept a --hostname / MDM_HOSTNAME that does not resolve (yet)",
    )
    p.add_argument(
        "--reissue-certs",
        action="store_true",
        help="issue new server certificates from the existing CA (e.g. after changing hostname)",
    )
    p.add_argument(
        "--force", action="store_true", help="regenerate the CA, server certificates and admin token"
    )
    p.set_defaults(func=run)


def _write_config(path: Path, hostname: str) -> None:
    env = os.environ
    text = CONFIG_TEMPLATE.format(
        hostname=hostname,
        database_url=env.get("MDM_DATABASE_URL", ""),
        ios_port=env.get("MDM_IOS_PORT", "443"),
        kes_port=env.get("MDM_KES_PORT", "13292"),
        web_http_port=env.get("MDM_WEB_HTTP_PORT", "8060"),
        web_https_port=env.get("MDM_WEB_HTTPS_PORT", "8061"),
        admin_port=env.get("MDM_ADMIN_PORT", "13299"),
    )
    path.write_text(text)
    os.chmod(path, 0o640)


def server_hostnames(config: Config) -> list[str]:
    names = [config.hostname, *config.pki.extra_sans]
    for extra in ("localhost", "127.0.0.1", "::1"):
        if extra not in names:
            names.append(extra)
    return names


def _hostname_source(args: argparse.Namespace) -> tuple[str, str, bool]:
    """(name, where it came from, given explicitly)."""
    if args.hostname:
        return args.hostname, "--hostname", True
    if os.environ.get("MDM_HOSTNAME"):
        return os.environ["MDM_HOSTNAME"], "MDM_HOSTNAME", True
    return socket.getfqdn() or "localhost", "this host's FQDN", False


def _set_push_certificate(path: Path, value: str) -> None:
    """apns.certificate_file in mdm.toml, keeping the file's comments and layout."""
    doc = tomlkit.parse(path.read_text())
    section = doc.get("apns")
    if section is None:
        section = tomlkit.table()
        doc["apns"] = section
    section["certificate_file"] = value
    path.write_text(tomlkit.dumps(doc))


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or os.environ.get("MDM_DATA_DIR") or "/var/lib/mdm")
    changes: list[str] = []
    kept: list[str] = []
    warnings: list[str] = []
    config_path = data_dir / CONFIG_FILE
    new_config = not config_path.exists()
    if new_config:
        hostname, source, explicit = _hostname_source(args)
        verdict = hostcheck.check(hostname, resolve_name=not args.no_resolve_check)
        if verdict.unresolved is not None and explicit:
            raise CliError(hostcheck.refusal(verdict, source), exit_code=2)
        warnings += hostcheck.warning_lines(verdict, source, data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o750)  # noqa: S103 - the service group may read mdm.toml; secrets are 0600/0700
    except OSError as exc:
        raise CliError(f"cannot create data directory {data_dir}: {exc.strerror}") from None

    if new_config:
        _write_config(config_path, hostname)
        changes.append(f"wrote config {config_path}")
    else:
        kept.append(f"config {config_path}")
    try:
        config = load_config(data_dir)
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if args.hostname and args.hostname != config.hostname:
        raise CliError(
            f"--hostname {args.hostname} differs from hostname = {config.hostname!r} in {config_path}; "
            "edit the file (then `mdm init --reissue-certs` to reissue the server certificates)",
            exit_code=2,
        )
    if not new_config:
        verdict = hostcheck.check(config.hostname, resolve_name=not args.no_resolve_check)
        warnings += hostcheck.warning_lines(verdict, f"hostname in {config_path}", data_dir)

    try:
        applied = asyncio.run(_prepare_database(config))
    except DatabaseUnavailable as exc:
        raise CliError(str(exc)) from None
    sqlite_file = config.data_path / "mdm.sqlite3"
    if not config.database.url and sqlite_file.exists():
        os.chmod(sqlite_file, 0o600)
    if applied:
        changes.append(
            f"database migrated ({', '.join(applied)}) at {Database(config.database_url).safe_url}"
        )
    else:
        kept.append("database schema (up to date)")

    try:
        passphrase = config.ca_passphrase()
        if CertificateAuthority.exists(config.ca_dir) and not args.force:
            ca = CertificateAuthority.load(config.ca_dir, passphrase)
            kept.append(f"CA in {config.ca_dir}")
        else:
            config.ca_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(config.ca_dir, 0o700)
            ca = CertificateAuthority.create(
                config.ca_dir,
                key_type=config.pki.key_type,
                rsa_bits=config.pki.rsa_bits,
                passphrase=passphrase,
                root_days=config.pki.root_validity_days,
                issuing_days=config.pki.issuing_validity_days,
            )
            changes.append(
                f"created CA (root + issuing, {config.pki.key_type}) in {config.ca_dir}"
                + ("; keys encrypted" if passphrase else "")
            )
    except (CAError, KeyError_, ConfigError) as exc:
        raise CliError(str(exc)) from None

    ca.crl_url = crl_url_for(config)  # CRL distribution point in the server certificates
    config.certs_dir.mkdir(parents=True, exist_ok=True)
    hostnames = server_hostnames(config)
    regenerate_all = args.force or args.reissue_certs or any(c.startswith("created CA") for c in changes)
    issued = []
    for slot in SLOTS:
        if slot_exists(config.certs_dir, slot) and not regenerate_all:
            continue
        issue_server_certificate(
            ca,
            config.certs_dir,
            slot,
            hostnames,
            key_type=config.pki.key_type,
            rsa_bits=config.pki.rsa_bits,
            days=config.pki.server_validity_days,
        )
        issued.append(slot)
    if issued:
        changes.append(
            f"issued server certificates for slots {', '.join(issued)} (SANs: {', '.join(hostnames)})"
        )
    else:
        kept.append("server certificates")

    with audit.local_action("init", token=ADMIN_TOKEN_NAME):
        token = asyncio.run(_admin_token(config, force=args.force))
    if token is None:
        kept.append("admin token")
    else:
        changes.append("created admin token")

    if not apns_config(config).certificate_file:
        try:
            value, topic = create_development_identity(config.data_path)
            _set_push_certificate(config_path, value)
        except OSError as exc:
            raise CliError(f"cannot write the development push identity: {exc.strerror or exc}") from None
        changes.append(
            f"created a DEVELOPMENT push identity (self-signed, topic {topic}) as apns.certificate_file"
        )
        warnings += ["", *DEVELOPMENT_HOWTO, ""]

    for line in changes:
        print(f"  + {line}")
    if not changes:
        print(
            f"nothing to do: {data_dir} is already initialised ({'; '.join(kept)}). "
            "Use --force to regenerate."
        )
    elif kept:
        print(f"  = kept: {'; '.join(kept)}")
    if warnings:
        sys.stdout.flush()
        print("\n".join(warnings), file=sys.stderr, flush=True)
    if token is not None and not os.environ.get("MDM_ADMIN_TOKEN"):
        print("\nAdmin API token (shown once, stored only as a hash):\n")
        print(f"    {token}\n")
        print("Save it for the CLI: `mdm login --token TOKEN` (or set MDM_API_TOKEN).")
    return 0


async def _prepare_database(config: Config) -> list[str]:
    db = Database(config.database_url, config.database.pool_size)
    try:
        await db.check()
        return await migrate.upgrade(db)
    finally:
        await db.close()


async def _admin_token(config: Config, *, force: bool) -> str | None:
    db = Database(config.database_url, config.database.pool_size)
    try:
        async with db.transaction() as session:
            try:
                return await tokens.replace_or_keep(
                    session, ADMIN_TOKEN_NAME, ["admin"], os.environ.get("MDM_ADMIN_TOKEN") or None,
                    force=force,
                )
            except InvalidArgument as exc:
                raise CliError(f"MDM_ADMIN_TOKEN: {exc.message}", exit_code=2) from None
    finally:
        await db.close()
