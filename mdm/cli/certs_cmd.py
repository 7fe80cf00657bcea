"""``mdm certs``: certificate life cycle and the service's own certificates.

Through the admin API of the running server (so that a revocation applies at once, in the CRL and
on every listener): ``issue``, ``list``, ``show``, ``revoke``, ``rules show|set``.

On this host's data directory (they change files the server reads): ``set`` (replace a server
certificate from PKCS#12, then signal the running server to reload), ``import-ca`` (run the
issuing CA from an existing key and certificate) and ``encrypt-keys``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import getpass
import os
import signal
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from mdm.cli import output
from mdm.cli.client import ApiClient, server_options, settings_from
from mdm.cli.common import CliError, add_data_dir, config_from
from mdm.config import Config, ConfigError
from mdm.core.errors import InvalidArgument
from mdm.db.engine import Database, DatabaseUnavailable
from mdm.pki import castore, replace
from mdm.pki.ca import ISSUING_KEY, ROOT_KEY, CAError, CertificateAuthority
from mdm.pki.certcheck import CertInputError, CertSummary
from mdm.pki.crl import REASONS, parse_reason
from mdm.pki.keys import KeyError_, key_is_encrypted, load_key, save_key
from mdm.pki.slots import SLOTS
from mdm.server.runtime import running_pid

API = "/api/v1/certificates"
TYPES = ["mobile", "mail", "vpn"]
MAX_INPUT_BYTES = 1024 * 1024


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
    p.add_argument("serial", metavar="SERIAL", help="serial number in hex")
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
    p.add_argument("-t", "--type", dest="slot", required=True, choices=list(SLOTS),
                   help="slot: C (admin), CR (its reserve), M (KES), MR (its reserve), ios, web")
    p.add_argument("-i", "--input", dest="input", required=True, metavar="FILE.p12")
    p.add_argument("-p", "--password", metavar="PASSWORD", help="container password (prompted if omitted)")
    p.add_argument("--no-reload", action="store_true", help="do not signal the running server")
    p.set_defaults(func=run_set)

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
    p.set_defaults(func=run_import_ca)

    p = actions.add_parser("encrypt-keys", help="encrypt the CA keys with the configured passphrase")
    add_data_dir(p)
    p.set_defaults(func=run_encrypt_keys)


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


def run_revoke(args: argparse.Namespace) -> int:
    try:
        reason = parse_reason(args.reason)
    except InvalidArgument as exc:
        raise CliError(exc.message, exit_code=2) from None
    with _client(args) as client:
        cert = client.post(f"{API}/{_serial_path(args.serial)}/revoke", {"reason": reason})
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


# ---- server certificates and the CA (local) ----------------------------------------------------
def _describe(summary: CertSummary | None) -> str:
    if summary is None:
        return "(none)"
    return (f"{summary.subject}, serial {summary.serial}, valid until {summary.not_after:%Y-%m-%d %H:%M}Z, "
            f"sha256 {summary.fingerprint}")


def run_set(args: argparse.Namespace) -> int:
    config = config_from(args)
    data = _read(args.input, "-i")
    password = _password(args.password, "PKCS#12 password: ", required=False)
    own_ca = _own_ca_certs(config)
    try:
        prepared = replace.prepare(data, password, args.slot, config.hostname, own_ca)
    except CertInputError as exc:
        raise CliError(f"{args.input}: {exc.message}; slot {args.slot} unchanged") from None
    old = replace.current(config.certs_dir, args.slot)
    pinned, db_problem = _db_call(config, lambda db: _count_pinned(db, old))
    try:
        replace.write(config.certs_dir, prepared)
    except OSError as exc:
        raise CliError(f"cannot write slot {args.slot} in {config.certs_dir}: {exc.strerror}") from None
    _, event_problem = _db_call(config, lambda db: _record(db, args.slot, old, prepared.new, pinned))
    slot = SLOTS[args.slot]
    print(f"slot {args.slot} ({slot.description}) replaced")
    print(f"  old: {_describe(old)}")
    print(f"  new: {_describe(prepared.new)}")
    top = prepared.chain[-1].subject.rfc4514_string()
    print(f"  chain: {len(prepared.chain)} certificate(s) up to {top}")
    if old is not None:
        if pinned is None:
            print(f"  pinned devices: unknown ({db_problem})")
        else:
            print(f"  pinned devices: {pinned} device(s) pinned the old certificate"
                  + ("; they must receive the new pin" if pinned else ""))
    for warning in prepared.warnings:
        output.note(f"warning: {warning}")
    if event_problem:
        output.note(f"warning: the replacement event was not recorded ({event_problem})")
    if slot.reserve_of is None and args.slot in ("C", "M"):
        output.note(f"note: the reserve slot {args.slot}R serves while {args.slot} is unusable")
    _signal_reload(config, args.no_reload)
    return 0


def _own_ca_certs(config: Config) -> list[Any]:
    from cryptography import x509

    certs = []
    for name in ("chain.pem", "root.pem"):
        try:
            certs += x509.load_pem_x509_certificates((config.ca_dir / name).read_bytes())
        except (OSError, ValueError):
            continue
    return certs


async def _count_pinned(db: Database, old: CertSummary | None) -> int | None:
    if old is None:
        return None
    async with db.session() as session:
        return await replace.count_pinned(session, old.fingerprint)


async def _record(
    db: Database, slot: str, old: CertSummary | None, new: CertSummary, pinned: int | None
) -> None:
    async with db.transaction() as session:
        await replace.record(session, slot, old, new, pinned, by=_operator())


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _db_call(config: Config, fn: Any) -> tuple[Any, str | None]:
    """Run ``fn(db)``; database trouble is reported, not fatal (files are the source of truth here)."""

    async def go() -> Any:
        db = Database(config.database_url, config.database.pool_size)
        try:
            await db.check(timeout=5)
            return await fn(db)
        finally:
            await db.close()

    try:
        return asyncio.run(go()), None
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
        return None, str(exc).splitlines()[0][:200]


def _signal_reload(config: Config, disabled: bool) -> None:
    pid = running_pid(config.data_path)
    if pid is None:
        print("no running server for this data directory: the new certificate is used at the next start")
        return
    if disabled:
        print(f"server (pid {pid}) not signalled (--no-reload): run `mdm reload` to switch")
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise CliError(f"cannot signal the server (pid {pid}): {exc.strerror}; run `mdm reload`") from None
    print(f"asked the running server (pid {pid}) to reload: new connections get the new certificate")


def run_import_ca(args: argparse.Namespace) -> int:
    config = config_from(args)
    if args.p12:
        if args.key or args.chain:
            raise CliError("--key/--chain go with --cert, not with --p12", exit_code=2)
        load = lambda: castore.material_from_p12(_read(args.p12, "--p12"), args.password)  # noqa: E731
        what = args.p12
    else:
        if not args.key:
            raise CliError("--cert needs --key FILE (the CA's private key)", exit_code=2)
        extra = _read(args.chain, "--chain") if args.chain else None
        cert_data, key_data = _read(args.cert, "--cert"), _read(args.key, "--key")
        load = lambda: castore.material_from_files(cert_data, key_data, args.password, extra)  # noqa: E731
        what = args.cert
    try:
        cert, key, pool = load()
        material = castore.validate_ca(cert, key, pool)
    except CertInputError as exc:
        raise CliError(f"{what}: {exc.message}; the CA is unchanged") from None
    previous = _current_issuing(config)
    try:
        passphrase = config.ca_passphrase()
        retired = castore.install(config.ca_dir, material, passphrase)
    except (ConfigError, OSError) as exc:
        raise CliError(f"cannot install the CA in {config.ca_dir}: {exc}") from None
    reissued = _reissue_server_certs(config, passphrase, previous) if args.reissue_server_certs else []
    summary = CertSummary.of(material.certificate)
    _, problem = _db_call(config, lambda db: _record_import(db, summary, retired))
    print(f"issuing CA is now {_describe(summary)}")
    print(f"  chain: {' <- '.join(c.subject.rfc4514_string() for c in reversed(material.chain))}")
    print(f"  key stored in {config.ca_dir / ISSUING_KEY} (0600{', encrypted' if passphrase else ''})")
    if retired is not None:
        print(f"  previous CA moved to {retired}; certificates it issued stay trusted until they expire")
    if reissued:
        print(f"  reissued the server certificates of slots {', '.join(reissued)} from the imported CA")
    elif retired is not None:
        print("  server certificates are unchanged (they still chain to the previous root, kept in "
              "root.pem); replace them with `mdm certs set`, or --reissue-server-certs, once devices "
              "trust the new root")
    for warning in material.warnings:
        output.note(f"warning: {warning}")
    if problem:
        output.note(f"warning: the import event was not recorded ({problem})")
    if running_pid(config.data_path) is not None:
        output.note("restart the running server (`mdm serve`) so that it issues from the imported CA")
    return 0


def _current_issuing(config: Config) -> Any:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate((config.ca_dir / "issuing.pem").read_bytes())
    except (OSError, ValueError):
        return None


def _reissue_server_certs(config: Config, passphrase: bytes | None, previous: Any) -> list[str]:
    """Reissue, from the new CA, the slot certificates the previous internal CA issued (those
    brought in with `mdm certs set` are left alone)."""
    from cryptography.exceptions import InvalidSignature

    from mdm.cli.init_cmd import server_hostnames
    from mdm.pki.crl import crl_url_for
    from mdm.pki.slots import issue_server_certificate, load_slot_chain

    if previous is None:
        return []
    try:
        ca = CertificateAuthority.load(config.ca_dir, passphrase)
    except (CAError, KeyError_) as exc:
        raise CliError(f"the CA was imported but does not load: {exc}") from None
    ca.crl_url = crl_url_for(config)
    done = []
    for slot in SLOTS:
        try:
            leaf = load_slot_chain(config.certs_dir, slot)[0]
            leaf.verify_directly_issued_by(previous)
        except (OSError, ValueError, IndexError, TypeError, InvalidSignature):
            continue
        issue_server_certificate(
            ca, config.certs_dir, slot, server_hostnames(config), key_type=config.pki.key_type,
            rsa_bits=config.pki.rsa_bits, days=config.pki.server_validity_days,
        )
        done.append(slot)
    return done


async def _record_import(db: Database, summary: CertSummary, retired: Path | None) -> None:
    from mdm.core import events

    async with db.transaction() as session:
        events.emit(session, "ca_imported", subject=summary.subject, serial=summary.serial,
                    sha256=summary.fingerprint, not_after=summary.not_after.isoformat(),
                    retired=str(retired) if retired else None, by=_operator())


def run_encrypt_keys(args: argparse.Namespace) -> int:
    config = config_from(args)
    try:
        passphrase = config.ca_passphrase()
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if not passphrase:
        raise CliError("no passphrase configured: set pki.passphrase_file or MDM_CA_PASSPHRASE", exit_code=2)
    paths = [config.ca_dir / ISSUING_KEY, config.ca_dir / ROOT_KEY]
    retired_dir = config.ca_dir / castore.RETIRED
    if retired_dir.is_dir():
        paths += sorted(retired_dir.glob(f"*/{ISSUING_KEY}")) + sorted(retired_dir.glob(f"*/{ROOT_KEY}"))
    done = 0
    for path in paths:
        if not path.exists() or key_is_encrypted(path):
            continue
        try:
            save_key(path, load_key(path), passphrase)
        except KeyError_ as exc:
            raise CliError(str(exc)) from None
        print(f"  encrypted {path}")
        done += 1
    try:
        CertificateAuthority.load(config.ca_dir, passphrase)
    except (CAError, KeyError_) as exc:
        raise CliError(f"the CA does not load with the configured passphrase: {exc}") from None
    print(f"{done} key(s) encrypted" if done else "every CA key is already encrypted")
    return 0
