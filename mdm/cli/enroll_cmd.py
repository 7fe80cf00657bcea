"""``mdm enroll ios|android --user NAME [--email ADDR] [--file OUT]``.

Works on the data directory directly (no running server needed): it creates the enrollment in
the database, which the web listener of any replica then serves. Without ``--file`` it prints the
one-time URL and its QR code (and mails the link with ``--email``); with ``--file`` it writes the
signed profile for Apple Configurator instead. Exit status: 0 done, 1 runtime failure (including
"link created but the e-mail could not be sent"), 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from mdm.cli.common import CliError, add_data_dir, config_from
from mdm.config import Config, ConfigError
from mdm.core.errors import InvalidArgument, ServiceError
from mdm.db.engine import DatabaseUnavailable
from mdm.enroll import qr, service
from mdm.pki.ca import CAError
from mdm.pki.issuance import InternalCASource
from mdm.pki.keys import KeyError_, write_private
from mdm.server.runtime import open_context


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "enroll",
        help="enroll a device: one-time profile link + QR code (or --file for Apple Configurator)",
        description="Create an enrollment for USER. Unknown users are created.",
    )
    p.add_argument("platform", choices=service.PLATFORMS, help="device platform (android: not available yet)")
    p.add_argument("--user", required=True, help="owner of the device (created if it does not exist)")
    p.add_argument("--email", metavar="ADDR", help="send the link to this address (needs [smtp])")
    p.add_argument("--file", metavar="OUT", help="write the signed .mobileconfig here instead of a link")
    p.add_argument("--no-qr", action="store_true", help="do not draw the QR code")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_data_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.file and args.email:
        raise CliError("--file and --email exclude each other: a file is not mailed", exit_code=2)
    if args.file and Path(args.file).is_dir():
        raise CliError(f"--file {args.file}: is a directory", exit_code=2)
    config = config_from(args)
    try:
        return asyncio.run(_run(args, config))
    except InvalidArgument as exc:
        raise CliError(exc.message, exit_code=2) from None
    except ServiceError as exc:
        raise CliError(exc.message) from None
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    except (DatabaseUnavailable, CAError, KeyError_) as exc:
        raise CliError(str(exc)) from None


async def _run(args: argparse.Namespace, config: Config) -> int:
    service.validate_request(args.platform, args.user, args.email)
    ctx = await open_context(config)
    try:
        env = service.Env(config, ctx.ca, InternalCASource(ctx.ca))
        by = f"cli:{getpass.getuser()}"
        if args.file:
            return await _to_file(env, ctx.db, args, by)
        created = await service.create_with_retry(
            env, ctx.db, platform=args.platform, user=args.user, email=args.email, created_by=by
        )
        assert created.url is not None
        mail = None
        if created.enrollment.email:
            png = await asyncio.to_thread(qr.png, created.url)
            mail = await service.mail_link(env, ctx.db, created, png)
    finally:
        await ctx.db.close()
    e = created.enrollment
    expires = service.as_utc(e.expires_at)
    if args.json:
        out: dict[str, Any] = {
            "id": e.id, "user": created.user.name, "user_created": created.user_created, "url": created.url,
            "expires_at": expires.isoformat(), "warnings": list(created.warnings),
            "email": None if mail is None else {"to": mail.to, "sent": mail.sent, "error": mail.error},
        }
        print(json.dumps(out, indent=2))
    else:
        made = " (new user)" if created.user_created else ""
        print(f"Enrollment {e.id} for {created.user.name}{made} ({e.platform}), "
              f"one-time link valid until {expires:%Y-%m-%d %H:%M} UTC:")
        print(created.url)
        if not args.no_qr:
            print(qr.terminal(created.url), end="")
        if mail is not None:
            print(f"E-mail sent to {mail.to}." if mail.sent else f"E-mail NOT sent: {mail.error}")
    for warning in created.warnings:
        print(f"mdm: warning: {warning}", file=sys.stderr)
    if mail is not None and not mail.sent:
        print("mdm: error: the link exists but was not mailed; hand out the URL or QR code above",
              file=sys.stderr)
        return 1
    return 0


async def _to_file(env: service.Env, db: Any, args: argparse.Namespace, by: str) -> int:
    """Certificate, enrollment and file together: the file is written inside the transaction,
    and removed again if the commit fails."""
    out = Path(args.file)
    prereq = await asyncio.to_thread(service.check_prerequisites, env)
    written = False
    try:
        async with db.transaction() as session:
            created = await service.create_file(env, session, prereq, user=args.user, created_by=by)
            assert created.profile is not None
            try:
                # The profile holds the device's private key (PKCS#12 and its password): 0600.
                await asyncio.to_thread(write_private, out, created.profile)
            except OSError as exc:
                raise CliError(f"cannot write {out}: {exc.strerror}") from None
            written = True
    except BaseException:
        if written:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(out.unlink)
        raise
    e = created.enrollment
    if args.json:
        print(json.dumps({"id": e.id, "user": created.user.name, "file": str(out),
                          "bytes": len(created.profile), "cert_serial": e.cert_serial,
                          "warnings": list(created.warnings)}, indent=2))
    else:
        print(f"Enrollment {e.id} for {created.user.name} ({e.platform}): wrote the signed profile to {out} "
              f"({len(created.profile)} bytes). Install it with Apple Configurator; it contains the device's "
              "private key, so keep it like a password.")
    for warning in created.warnings:
        print(f"mdm: warning: {warning}", file=sys.stderr)
    return 0
