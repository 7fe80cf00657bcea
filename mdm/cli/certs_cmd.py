"""``mdm certs``: certificate life cycle and the service's own certificates.

Through the admin API of the running server (so that a revocation applies at once, in the CRL and
on every listener): ``issue``, ``list``, ``show``, ``revoke``, ``rules show|set``.

On this host's data directory (they change files the server reads): ``set`` (replace a server
certificate from PKCS#12, then signal the running server to reload), ``import-ca`` (run the
issuing CA from an existing key and certificate) and ``encrypt-keys``, in ``mdm.cli.certs_local``.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mdm.cli import output
from mdm.cli.client import ApiClient, server_options, settings_from
from mdm.cli.common import CliError, add_data_dir

API = "/api/v1/certificates"
TYPES = ["mobile", "mail", "vpn"]
MAX_INPUT_BYTES = 1024 * 1024
# The names of mdm.pki.crl.REASONS and mdm.pki.slots.SLOTS (tests/test_cli_fast.py keeps them equal):
# importing those modules would load the crypto stack for every `mdm certs list`.
REASONS = ("unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
           "cessation_of_operation", "privilege_withdrawn", "aa_compromise")
SLOTS = ("C", "CR", "M", "MR", "ios", "web")
# A serial prefix shorter than this matches too much to be meant (serials are random).
MIN_PREFIX = 6


def _local(name: str) -> Callable[[argparse.Namespace], int]:
    """A handler of mdm.cli.certs_local, imported when the command runs."""

    def run(args: argparse.Namespace) -> int:
        from mdm.cli import certs_local

        handler: Callable[[argparse.Namespace], int] = getattr(certs_local, name)
        return handler(args)

    return run


def register(sub: argparse._SubParsersAction) -> None:
    certs = sub.add_parser("certs", help="certificates: issue, list, revoke, rules, server certificates, CA")
    actions = certs.add_subparsers(dest="action", metavar="ACTION", required=True)
    api = server_options()

    p = actions.add_parser("issue", parents=[api], help="issue a user certificate per its type's rule")
    p.add_argument("--user", required=True, metavar="NAME", help="owner (existing, or --create-user)")
    p.add_argument("--type", required=True, choices=TYPES)
    p.add_argument("--p12", metavar="FILE", help="write key, certificate and chain as PKCS#12 (mode 0600)")
    p.add_argument("--password", metavar="P", help="PKCS#12 password (prompted when omitted on a terminal)")
    p.add_argument("--legacy-p12", action="store_true", help="3DES/SHA-1 container for old clients")
    p.add_argument("--csr", metavar="FILE", help="certify this PKCS#10 request instead of generating a key")
    p.add_argument("--out", metavar="FILE", help="write the certificate and chain (PEM) here")
    p.add_argument("--create-user", action="store_true", help="create the user if it does not exist")
    p.add_argument("--email", metavar="ADDR", help="e-mail address (mail certificates; new users)")
    p.set_defaults(func=run_issue)

    p = actions.add_parser("list", parents=[api], help="list issued certificates (newest first)")
    p.add_argument("--user", metavar="NAME")
    p.add_argument("--status", choices=["valid", "revoked", "expired", "superseded"])
    p.add_argument("--type", choices=[*TYPES, "server"])
    p.add_argument("--device", type=int, metavar="ID")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="page size (default 50)")
    p.add_argument("--all", action="store_true", help="follow every page")
    p.set_defaults(func=run_list)

    p = actions.add_parser("show", parents=[api], help="show one certificate (with --pem: its PEM)")
    p.add_argument("serial", metavar="SERIAL", help="serial number in hex")
    p.add_argument("--pem", action="store_true", help="print only the PEM")
    p.set_defaults(func=run_show)

    p = actions.add_parser("revoke", parents=[api], help="revoke a certificate; the CRL is updated at once")
    p.add_argument("serial", metavar="SERIAL",
                   help=f"serial number in hex, or a prefix of it that only one certificate has "
                   f"(at least {MIN_PREFIX} digits)")
    p.add_argument("--reason", default="unspecified", metavar="REASON",
                   help=f"RFC 5280 reason: {', '.join(REASONS)} (default unspecified)")
    p.set_defaults(func=run_revoke)

    rules = actions.add_parser("rules", help="issuance rules per certificate type").add_subparsers(
        dest="rules_action", metavar="ACTION", required=True
    )
    p = rules.add_parser("show", parents=[api], help="show the rules")
    p.add_argument("--type", choices=TYPES)
    p.set_defaults(func=run_rules_show)
    p = rules.add_parser("set", parents=[api], help="change a rule (only the options given)")
    p.add_argument("--type", required=True, choices=TYPES)
    p.add_argument("--validity-days", type=int, metavar="N")
    p.add_argument("--key-type", choices=["rsa", "ec"])
    p.add_argument("--key-size", type=int, metavar="BITS", help="RSA 2048/3072/4096/8192; EC 256")
    p.add_argument("--renewal-days", type=int, metavar="N", help="renew this long before expiry (0: never)")
    p.add_argument("--source", metavar="NAME", help="certificate source (internal, ...)")
    p.add_argument("--template", metavar="NAME", help="enterprise PKI template name ('' clears it)")
    p.set_defaults(func=run_rules_set)

    p = actions.add_parser(
        "set", help="replace a server certificate from PKCS#12 (klsetsrvcert)",
        description="Replace the certificate of a slot from a PKCS#12 container holding the key and the "
        "chain up to the root, then ask the running server to reload (the next handshake uses it).",
    )
    add_data_dir(p)
    p.add_argument("-t", "--type", dest="slot", required=True, choices=SLOTS,
                   help="slot: C (admin), CR (its reserve), M (KES), MR (its reserve), ios, web")
    p.add_argument("-i", "--input", dest="input", required=True, metavar="FILE.p12")
    p.add_argument("-p", "--password", metavar="PASSWORD", help="container password (prompted if omitted)")
    p.add_argument("--no-reload", action="store_true", help="do not signal the running server")
    p.set_defaults(func=_local("run_set"))

    p = actions.add_parser(
        "import-ca", help="run the issuing CA from an existing key and certificate (PEM or PKCS#12)",
    )
    add_data_dir(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--cert", metavar="FILE", help="CA certificate (PEM/DER; may include its chain)")
    source.add_argument("--p12", metavar="FILE", help="PKCS#12 with the CA key, certificate and chain")
    p.add_argument("--key", metavar="FILE", help="CA private key (PEM/DER) for --cert")
    p.add_argument("--chain", metavar="FILE", help="intermediates and root (PEM) if not in --cert")
    p.add_argument("--password", metavar="P", help="password of the PKCS#12 or of an encrypted key")
    p.add_argument("--reissue-server-certs", action="store_true",
                   help="also reissue the server certificates the previous CA issued (devices must trust "
                   "the new root first)")
    p.set_defaults(func=_local("run_import_ca"))

    p = actions.add_parser("encrypt-keys", help="encrypt the CA keys with the configured passphrase")
    add_data_dir(p)
    p.set_defaults(func=_local("run_encrypt_keys"))


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(settings_from(args))


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise CliError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{what} {path}: is a directory") from None
    except OSError as exc:
        raise CliError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_INPUT_BYTES:
        raise CliError(f"{what} {path}: larger than {MAX_INPUT_BYTES} bytes; not a certificate file")
    return data


def _password(given: str | None, prompt: str, *, required: bool) -> str | None:
    if given is not None:
        return given
    if sys.stdin.isatty():
        return getpass.getpass(prompt) or None
    if required:
        raise CliError(f"{prompt.rstrip(': ')} required (--password)", exit_code=2)
    return None


def _write_private(path: str, data: bytes) -> None:
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


# ---- life cycle through the API ----------------------------------------------------------------
def run_issue(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"user": args.user, "type": args.type, "create_user": args.create_user}
    if args.email:
        body["email"] = args.email
    if args.csr:
        if args.p12:
            raise CliError("--p12 and --csr exclude each other (with a CSR the key stays with you)", 2)
        csr = _read(args.csr, "--csr")
        # PEM as is; a DER request travels base64-encoded
        is_pem = csr.lstrip().startswith(b"-----")
        body["csr"] = csr.decode(errors="replace") if is_pem else base64.b64encode(csr).decode()
    elif args.p12:
        body["p12_password"] = _password(args.password, "PKCS#12 password: ", required=True)
        body["legacy_p12"] = args.legacy_p12
    else:
        raise CliError(
            "give --p12 FILE (a key pair is generated and written there) or --csr FILE "
            "(your request is certified)",
            exit_code=2,
        )
    with _client(args) as client:
        result = client.post(API, body)
    if args.p12:
        _write_private(args.p12, base64.b64decode(result["pkcs12"]))
    if args.out:
        try:
            Path(args.out).write_text(result["certificate_pem"] + result["chain_pem"])
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
    cert = result["certificate"]
    if args.json:
        output.emit_json(result if not args.p12 else {**result, "pkcs12": f"written to {args.p12}"})
        return 0
    if result["user_created"]:
        output.note(f"created user {args.user}")
    output.fields([
        ("serial", cert["serial"]), ("type", cert["type"]), ("subject", cert["subject"]),
        ("user", cert["user"]), ("valid until", output.when(cert["not_after"])), ("source", cert["source"]),
    ])
    if args.p12:
        output.note(f"key, certificate and chain written to {args.p12} (mode 0600)")
    elif not args.out:
        print(result["certificate_pem"] + result["chain_pem"], end="")
    return 0


CERT_COLUMNS: list[output.Column] = [
    ("SERIAL", lambda c: c["serial"]),
    ("TYPE", lambda c: c["type"]),
    ("STATUS", lambda c: c["status"]),
    ("USER", lambda c: c["user"]),
    ("DEVICE", lambda c: c["device_id"]),
    ("NOT AFTER", lambda c: output.when(c["not_after"])),
    ("SUBJECT", lambda c: c["subject"]),
]


def run_list(args: argparse.Namespace) -> int:
    params = {"user": args.user, "status": args.status, "type": args.type, "device": args.device,
              "limit": args.limit}
    with _client(args) as client:
        if args.all:
            items = [i for page in client.pages(API, params) for i in page["items"]]
            next_cursor = None
        else:
            page = client.get(API, **params)
            items, next_cursor = page["items"], page["next_cursor"]
    if args.json:
        output.emit_json({"items": items, "next_cursor": next_cursor})
        return 0
    output.table(items, CERT_COLUMNS)
    if next_cursor:
        output.note("more certificates: --all, or narrow with --user/--status/--type")
    return 0


def run_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        cert = client.get(f"{API}/{_serial_path(args.serial)}")
    if args.pem:
        print(cert["pem"], end="")
    elif args.json:
        output.emit_json(cert)
    else:
        output.fields([(k, cert[k]) for k in cert if k != "pem"])
    return 0


def _serial_path(serial: str) -> str:
    clean = serial.strip().lower().replace(":", "").removeprefix("0x")
    if not clean or any(c not in "0123456789abcdef" for c in clean):
        raise CliError(f"serial {serial!r}: must be hexadecimal (as `mdm certs list` prints it)", exit_code=2)
    return clean


def parse_reason(name: str) -> str:
    """``key_compromise``, ``keyCompromise`` or ``key-compromise`` -> ``key_compromise`` (the server
    checks it again)."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name.strip()).replace("-", "_").lstrip("_")
    if snake in ("certificate_hold", "remove_from_crl"):
        raise CliError(f"reason {name}: not supported (revocation here is permanent)", exit_code=2)
    if snake not in REASONS:
        raise CliError(f"reason {name!r}: unknown; RFC 5280 reasons are {', '.join(REASONS)}", exit_code=2)
    return snake


def resolve_serial(client: ApiClient, text: str) -> str:
    """The full serial of the one certificate whose serial is ``text`` or starts with it. Several
    (or none) is an error that names them; nothing is revoked then."""
    clean = _serial_path(text)
    exact = client.send("GET", f"{API}/{clean}")
    if exact.status_code == 200:
        return str(exact.json()["serial"])
    if exact.status_code != 404:
        client.request("GET", f"{API}/{clean}")  # raises the server's error as one line
    prefix = clean.lstrip("0") or "0"  # serials are written without leading zeros
    if len(prefix) < MIN_PREFIX:
        raise CliError(f"no certificate has serial {clean}, and as a prefix it is too short: give at least "
                       f"{MIN_PREFIX} hex digits (mdm certs list shows the serials)", exit_code=2)
    found = [c for page in client.pages(API, {"limit": 500}) for c in page["items"]
             if str(c["serial"]).startswith(prefix)]
    if not found:
        raise CliError(f"no certificate has a serial starting with {prefix} (mdm certs list shows them)")
    if len(found) > 1:
        shown = "; ".join(f"{c['serial']} ({c['type']}, {c['status']}, {c['subject']})" for c in found[:10])
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        raise CliError(f"serial prefix {prefix} is ambiguous, {len(found)} certificates match: "
                       f"{shown}{more}; give more digits (nothing was revoked)")
    return str(found[0]["serial"])


def run_revoke(args: argparse.Namespace) -> int:
    reason = parse_reason(args.reason)
    with _client(args) as client:
        serial = resolve_serial(client, args.serial)
        cert = client.post(f"{API}/{serial}/revoke", {"reason": reason})
    if args.json:
        output.emit_json(cert)
    else:
        print(f"revoked {cert['serial']} ({cert['subject']}), reason {cert['revocation_reason']}; "
              "the CRL is republished and every listener refuses it")
    return 0


RULE_COLUMNS: list[output.Column] = [
    ("TYPE", lambda r: r["type"]),
    ("VALIDITY", lambda r: f"{r['validity_days']}d"),
    ("KEY", lambda r: f"{r['key_type']}-{r['key_size']}"),
    ("RENEW BEFORE", lambda r: f"{r['renewal_days']}d" if r["renewal_days"] else "never"),
    ("SOURCE", lambda r: r["source"]),
    ("TEMPLATE", lambda r: r["template"]),
]


def run_rules_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        items = [client.get(f"{API}/rules/{args.type}")] if args.type else client.get(f"{API}/rules")["items"]
    if args.json:
        output.emit_json({"items": items})
    else:
        output.table(items, RULE_COLUMNS)
    return 0


def run_rules_set(args: argparse.Namespace) -> int:
    body = {
        name: value
        for name, value in (
            ("validity_days", args.validity_days), ("key_type", args.key_type), ("key_size", args.key_size),
            ("renewal_days", args.renewal_days), ("source", args.source), ("template", args.template),
        )
        if value is not None
    }
    if not body:
        raise CliError("nothing to change: give at least one of --validity-days, --key-type, --key-size, "
                       "--renewal-days, --source, --template", exit_code=2)
    with _client(args) as client:
        rule = client.request("PUT", f"{API}/rules/{args.type}", json=body)
    if args.json:
        output.emit_json(rule)
    else:
        output.table([rule], RULE_COLUMNS)
    return 0


