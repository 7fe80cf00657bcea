"""``mdm push``: ``apns csr`` (the first step towards Apple's MDM push certificate), ``apns
set-cert`` (install it: ``mdm.cli.push_cert``) and ``status`` (the push services of a running
server, through the admin API).

Apple issues the MDM push certificate (whose subject UID is the topic devices are woken on) to a
certificate signing request that an MDM vendor has signed: this command writes the private key
(mode 0600) and the CSR; the README's "Try it without an Apple certificate" section gives the
remaining steps (vendor signature, upload at https://identity.apple.com/pushcert, installing
the certificate). Until then ``mdm init``'s development push identity stands in.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mdm.cli import output
from mdm.cli.api_cmd import API, leaf, list_page, more_hint, paging
from mdm.cli.client import ApiClient
from mdm.cli.common import CliError, Subparsers, add_data_dir


def register(sub: Subparsers) -> None:
    push = sub.add_parser("push", help="push notification services (APNs)").add_subparsers(
        dest="service", metavar="SERVICE", required=True
    )
    apns = push.add_parser("apns", help="Apple Push Notification service").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = apns.add_parser(
        "csr",
        help="write a private key and a certificate signing request for the MDM push certificate",
        description="Write a new RSA 2048 key (mode 0600) and a CSR for Apple's MDM push certificate. "
        "Have the CSR signed through an MDM vendor, upload the signed request at "
        "https://identity.apple.com/pushcert, and install the certificate Apple returns with this key.",
    )
    p.add_argument("--out", required=True, metavar="FILE.csr", help="where to write the CSR (PEM)")
    p.add_argument("--key", metavar="FILE.key", help="where to write the private key (default: FILE.key)")
    p.add_argument("--cn", default="mdm APNs push", help="subject common name (default: %(default)s)")
    p.add_argument("--email", metavar="ADDR", help="subject e-mail address (optional)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=run_csr)
    p = apns.add_parser(
        "set-cert",
        help="install the MDM push certificate and its key (PKCS#12 or PEM)",
        description="Check and install Apple's MDM push certificate with its private key: written to "
        "DATA/apns/push.pem and push.key (mode 0600), [apns] of mdm.toml pointed at them, and a running "
        "server reloads it (a renewed certificate with the same topic needs no restart).",
    )
    p.add_argument("file", metavar="FILE", help="PKCS#12 (.p12/.pfx) or PEM with the certificate (and key)")
    p.add_argument("--key", metavar="KEY", help="the private key (PEM) when FILE holds only the certificate "
                   "(e.g. the key written by `mdm push apns csr`)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--password", metavar="P", help="password of the PKCS#12 file or encrypted key "
                        "(visible to other users in the process list: prefer --password-file)")
    secret.add_argument("--password-file", metavar="F", help="file holding that password")
    p.add_argument("--new-topic", action="store_true",
                   help="accept a topic other than the configured one "
                   "(every enrolled iOS device must re-enroll)")
    add_data_dir(p)
    p.set_defaults(func=_set_cert)

    p = leaf(push, "status", run_status,
             "push certificate (topic, expiry), each service's state, owed wake-ups, invalid tokens")
    p = leaf(push, "invalid-tokens", run_invalid_tokens,
             "devices whose push token the service refused for good (not pushed until a new token)")
    paging(p)


def _set_cert(args: argparse.Namespace) -> int:
    from mdm.cli.push_cert import run_set_cert  # the crypto and configuration stack, when it runs

    return run_set_cert(args)


def run_status(args: argparse.Namespace, client: ApiClient) -> int:
    status: dict[str, Any] = client.get(f"{API}/push/status")
    if args.json:
        output.emit_json(status)
        return 0
    for line in status_lines(status):
        print(line)
    return 0


INVALID_TOKEN_COLUMNS: list[output.Column] = [
    ("ID", lambda d: d["id"]),
    ("PROTOCOL", lambda d: d["protocol"]),
    ("IDENTIFIER", lambda d: d["identifier"]),
    ("TOKEN REFUSED", lambda d: output.when(d.get("push_changed_at"))),
]


def run_invalid_tokens(args: argparse.Namespace, client: ApiClient) -> int:
    page = list_page(args, client, f"{API}/push/invalid-tokens", {})
    if args.json:
        output.emit_json(page)
        return 0
    if page["items"]:
        output.table(page["items"], INVALID_TOKEN_COLUMNS)
    else:
        output.note("no device has an invalid push token")
    more_hint(page, "devices")
    return 0


def status_lines(status: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    cert = status.get("certificate") or {}
    if cert.get("configured", bool(cert.get("topic"))):
        expiry = "EXPIRED" if cert.get("expired") else f"{cert.get('days_left')} days left"
        lines.append(f"apns certificate: topic {cert.get('topic')}, valid until "
                     f"{output.when(cert.get('not_after'))} ({expiry})")
        env = cert.get("environment") or "-"
        dev = ", DEVELOPMENT identity (self-signed: cannot wake real devices)" if cert.get("development") \
            else ""
        lines.append(f"  environment: {env}{dev}")
    else:
        lines.append("apns certificate: none installed (`mdm push apns set-cert FILE`)")
    for name, svc in sorted((status.get("services") or {}).items()):
        if not svc.get("configured"):
            lines.append(f"{name}: not configured")
            continue
        circuit = "OPEN (credentials refused: pushes held)" if svc.get("circuit_open") else "closed"
        lines.append(f"{name}: circuit {circuit}, sent {svc.get('sent', 0)}, "
                     f"last success {output.when(svc.get('last_success_at'))}")
        failures = svc.get("failures") or {}
        if failures:
            lines.append("  failures: " + ", ".join(f"{r} {n}" for r, n in sorted(failures.items())))
    lines.append(f"owed wake-ups: {status.get('owed', 0)}")
    lines.append(f"devices with an invalid push token: {status.get('invalid_tokens', 0)}")
    return lines


def run_csr(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from mdm.pki.keys import generate_key, write_private

    csr_path = Path(args.out)
    key_path = Path(args.key) if args.key else csr_path.with_suffix(".key")
    if key_path == csr_path:
        raise CliError("--key and --out must be different files", exit_code=2)
    for path in (csr_path, key_path):
        if path.is_dir():
            raise CliError(f"{path}: is a directory", exit_code=2)
        if path.exists() and not args.force:
            raise CliError(f"{path} exists; nothing was written (--force overwrites it)", exit_code=2)
        if not path.parent.is_dir():
            raise CliError(f"{path}: directory {path.parent} does not exist", exit_code=2)
    if not 1 <= len(args.cn) <= 64:
        raise CliError("--cn: 1 to 64 characters", exit_code=2)
    if args.email is not None and (not args.email.isascii() or "@" not in args.email or " " in args.email):
        raise CliError(f"--email {args.email!r}: not an e-mail address", exit_code=2)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, args.cn)]
    if args.email:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, args.email))
    key = generate_key("rsa", 2048)  # what Apple's push certificates use
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        write_private(key_path, pem_key)
        tmp = csr_path.with_name(f".{csr_path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        tmp.replace(csr_path)
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename or csr_path}: {exc.strerror}") from None
    print(f"wrote {key_path} (private key, mode 0600: keep it; the certificate Apple issues goes with it)")
    print(f"wrote {csr_path} (certificate signing request)")
    print("next: have the CSR signed through an MDM vendor, upload the signed request at")
    print("https://identity.apple.com/pushcert, download the certificate, then")
    print("`mdm push apns set-cert FILE` (or set [apns] certificate_file to it and run `mdm reload`)")
    return 0
