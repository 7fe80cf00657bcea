"""``mdm enroll ios|android --user NAME [--email ADDR] [--file OUT]`` and ``mdm enroll links``.

``ios``/``android`` work on the data directory directly (no running server needed): they create
the enrollment in the database, which the web listener of any replica then serves. Without
``--file`` they print the one-time URL and its QR code (and mail the link with ``--email``); with
``--file`` they write the signed profile for Apple Configurator (iOS) or the enrollment package
(Android, ``--pkcs12`` to put the user's PKCS#12 into it) instead. Exit status: 0 done, 1
runtime failure (including "link created but the e-mail could not be sent"), 2 bad input or
configuration.

``links list|revoke`` go through the admin API of the running server (``mdm.cli.enroll_links``).

The parser imports nothing heavy: the enrollment service, the CA and the database are imported
when an enrollment is made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdm.cli import enroll_links
from mdm.cli.common import CliError, Subparsers, add_data_dir, config_from

if TYPE_CHECKING:
    from mdm.config import Config
    from mdm.db.engine import Database
    from mdm.enroll.seams import Env

# mdm.enroll.validation.PLATFORMS (a test keeps them equal; importing it here would load the server).
PLATFORMS = ("ios", "android")


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "enroll",
        help="enroll a device: one-time profile link + QR code (or --file for Apple Configurator)",
        description="Create an enrollment for USER (unknown users are created), or list and revoke "
        "enrollment links.",
    )
    platforms = p.add_subparsers(dest="platform", metavar="PLATFORM", required=True)
    for platform in PLATFORMS:
        e = platforms.add_parser(
            platform,
            help=f"enroll an {'iPhone or iPad' if platform == 'ios' else 'Android device (KES agent)'}",
            description=f"Create an {platform} enrollment for USER. Unknown users are created.",
        )
        e.add_argument("--user", required=True, help="owner of the device (created if it does not exist)")
        e.add_argument("--email", metavar="ADDR", help="send the link to this address (needs [smtp])")
        e.add_argument("--file", metavar="OUT", help="write the signed .mobileconfig here instead of a link"
                       if platform == "ios" else "write the enrollment package (JSON) here instead of a link")
        if platform == "android":
            e.add_argument("--pkcs12", action=argparse.BooleanOptionalAction, default=None,
                           help="put the user's PKCS#12 into the package, for a reverse proxy that "
                           "authenticates devices (default: [enroll] android_pkcs12)")
        e.add_argument("--no-qr", action="store_true", help="do not draw the QR code")
        e.add_argument("--json", action="store_true", help="print the result as JSON")
        add_data_dir(e)
        e.set_defaults(func=run)
    enroll_links.register(platforms)


def run(args: argparse.Namespace) -> int:
    if args.file and args.email:
        raise CliError("--file and --email exclude each other: a file is not mailed", exit_code=2)
    if args.file and Path(args.file).is_dir():
        raise CliError(f"--file {args.file}: is a directory", exit_code=2)
    config = config_from(args)
    from mdm.config import ConfigError
    from mdm.core import audit
    from mdm.core.errors import InvalidArgument, ServiceError
    from mdm.db.engine import DatabaseUnavailable
    from mdm.pki.ca import CAError
    from mdm.pki.keys import KeyError_

    try:
        with audit.local_action(f"enroll {args.platform}", user=args.user, platform=args.platform,
                                file=bool(args.file)):
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
    from mdm.enroll import qr, service
    from mdm.enroll.mailing import mail_link
    from mdm.enroll.seams import Env, ProfileBuilders
    from mdm.enroll.validation import validate_request
    from mdm.ios.enroll_profiles import builders as ios_builders
    from mdm.kes.enroll_package import builders as kes_builders
    from mdm.pki.ca import CertificateAuthority
    from mdm.pki.issuance import InternalCASource
    from mdm.server.runtime import open_context

    validate_request(args.platform, args.user, args.email)
    ctx = await open_context(config)
    try:
        ca = await asyncio.to_thread(CertificateAuthority.load, config.ca_dir, config.ca_passphrase())
        builders = ProfileBuilders({"ios": ios_builders().get("ios"),
                                    "android": kes_builders().get("android")})
        env = Env(config, ca, InternalCASource(ca), builders=builders)
        by = f"cli:{getpass.getuser()}"
        if args.file:
            return await _to_file(env, ctx.db, args, by)
        created = await service.create_with_retry(
            env, ctx.db, platform=args.platform, user=args.user, email=args.email, created_by=by,
            pkcs12=getattr(args, "pkcs12", None),
        )
        assert created.url is not None
        qr_text = created.qr_text or created.url
        mail = None
        if created.enrollment.email:
            png = await asyncio.to_thread(qr.png, qr_text)
            mail = await mail_link(env, ctx.db, created.enrollment, created.user, created.url, png)
    finally:
        await ctx.db.close()
    e = created.enrollment
    expires = e.expires_at
    if args.json:
        out: dict[str, Any] = {
            "id": e.id, "user": created.user.name, "user_created": created.user_created, "url": created.url,
            "expires_at": expires.isoformat(), "warnings": list(created.warnings),
            "email": None if mail is None else {"to": mail.to, "sent": mail.sent, "error": mail.error},
        }
        if qr_text != created.url:
            out["qr"] = qr_text  # an agent's enrollment data (Android)
        print(json.dumps(out, indent=2))
    else:
        made = " (new user)" if created.user_created else ""
        print(f"Enrollment {e.id} for {created.user.name}{made} ({e.platform}), "
              f"one-time link valid until {expires:%Y-%m-%d %H:%M} UTC:")
        print(created.url)
        if not args.no_qr:
            print(qr.terminal(qr_text), end="")
        if mail is not None:
            print(f"E-mail sent to {mail.to}." if mail.sent else f"E-mail NOT sent: {mail.error}")
    for warning in created.warnings:
        print(f"mdm: warning: {warning}", file=sys.stderr)
    if mail is not None and not mail.sent:
        print("mdm: error: the link exists but was not mailed; hand out the URL or QR code above",
              file=sys.stderr)
        return 1
    return 0


async def _to_file(env: Env, db: Database, args: argparse.Namespace, by: str) -> int:
    """Certificate, enrollment and file together: the file is written inside the transaction,
    and removed again if the commit fails."""
    from mdm.enroll import service
    from mdm.enroll.profiles import prepare
    from mdm.pki.keys import write_private

    out = Path(args.file)
    identity = service.identity_of(env, args.platform, getattr(args, "pkcs12", None))
    prereq = await asyncio.to_thread(prepare, env, args.platform)
    written = False
    try:
        async with db.transaction() as session:
            created = await service.create_file(env, session, prereq, user=args.user, created_by=by,
                                                platform=args.platform, identity=identity)
            assert created.profile is not None
            try:
                # The profile holds the device's private key (PKCS#12 and its password) or an
                # Android enrollment token: 0600.
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
    elif e.platform == "android":
        print(f"Enrollment {e.id} for {created.user.name} (android): wrote the enrollment package to {out} "
              f"({len(created.profile)} bytes), valid until {e.expires_at:%Y-%m-%d %H:%M} UTC. Hand it to "
              "the KES agent; it holds a one-time enrollment token"
              + (" and the user's private key" if e.identity == "pkcs12" else "")
              + ", so keep it like a password.")
    else:
        print(f"Enrollment {e.id} for {created.user.name} ({e.platform}): wrote the signed profile to {out} "
              f"({len(created.profile)} bytes). Install it with Apple Configurator; it contains the device's "
              "private key, so keep it like a password.")
    for warning in created.warnings:
        print(f"mdm: warning: {warning}", file=sys.stderr)
    return 0
