"""``mdm certs``: certificate life cycle and the service's own certificates. This module parses
the arguments; the commands run in the modules below, imported only when one of them runs.

Through the admin API of the running server (so that a revocation applies at once, in the CRL and
on every listener): ``issue``, ``list``, ``show``, ``revoke``, ``rules show|set``, in
``mdm.cli.certs_api``.

On this host's data directory (they change files the server reads): ``set`` (replace a server
certificate from PKCS#12, then signal the running server to reload), ``import-ca`` (run the
issuing CA from an existing key and certificate) and ``encrypt-keys``, in ``mdm.cli.certs_local``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from mdm.cli.client import server_options
from mdm.cli.common import CliError, add_data_dir

API = "/api/v1/certificates"
TYPES = ["mobile", "mail", "vpn"]
# The names of mdm.pki.crl.REASONS and mdm.pki.slots.SLOTS (tests/test_cli_fast.py keeps them equal):
# importing those modules would load the crypto stack for every `mdm certs list`.
REASONS = ("unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
           "cessation_of_operation", "privilege_withdrawn", "aa_compromise")
SLOTS = ("C", "CR", "M", "MR", "ios", "web")
# A serial prefix shorter than this matches too much to be meant (serials are random).
MIN_PREFIX = 6


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The handler ``name`` of ``mdm.cli.<module>``, imported when the command runs (the parser
    stays light: ``certs_local`` needs the crypto and database stacks)."""

    def run(args: argparse.Namespace) -> int:
        handler: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(f"mdm.cli.{module}"), name
        )
        return handler(args)

    return run


def _api(name: str) -> Callable[[argparse.Namespace], int]:
    return _lazy("certs_api", name)


def _local(name: str) -> Callable[[argparse.Namespace], int]:
    return _lazy("certs_local", name)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.set_defaults(func=_api("run_issue"))

    p = actions.add_parser("list", parents=[api], help="list issued certificates (newest first)")
    p.add_argument("--user", metavar="NAME")
    p.add_argument("--status", choices=["valid", "revoked", "expired", "superseded"])
    p.add_argument("--type", choices=[*TYPES, "server"])
    p.add_argument("--device", type=int, metavar="ID")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="page size (default 50)")
    p.add_argument("--all", action="store_true", help="follow every page")
    p.set_defaults(func=_api("run_list"))

    p = actions.add_parser("show", parents=[api], help="show one certificate (with --pem: its PEM)")
    p.add_argument("serial", metavar="SERIAL", help="serial number in hex")
    p.add_argument("--pem", action="store_true", help="print only the PEM")
    p.set_defaults(func=_api("run_show"))

    p = actions.add_parser("revoke", parents=[api], help="revoke a certificate; the CRL is updated at once")
    p.add_argument("serial", metavar="SERIAL",
                   help=f"serial number in hex, or a prefix of it that only one certificate has "
                   f"(at least {MIN_PREFIX} digits)")
    p.add_argument("--reason", default="unspecified", metavar="REASON",
                   help=f"RFC 5280 reason: {', '.join(REASONS)} (default unspecified)")
    p.set_defaults(func=_api("run_revoke"))

    requests = actions.add_parser(
        "requests", parents=[api], help="requests an enterprise CA holds pending (list, poll, cancel)"
    )
    requests.add_argument("--status", choices=["pending", "issued", "denied", "failed", "cancelled"])
    requests.add_argument("--limit", type=int, default=50, metavar="N", help="page size (default 50)")
    requests.set_defaults(func=_lazy("certs_requests", "run_requests"))
    request_actions = requests.add_subparsers(dest="requests_action", metavar="ACTION")
    p = request_actions.add_parser("poll", parents=[api], help="ask the CA about a pending request now")
    p.add_argument("id", metavar="ID")
    p = request_actions.add_parser("cancel", parents=[api], help="stop polling a pending request")
    p.add_argument("id", metavar="ID")

    rules = actions.add_parser("rules", help="issuance rules per certificate type").add_subparsers(
        dest="rules_action", metavar="ACTION", required=True
    )
    p = rules.add_parser("show", parents=[api], help="show the rules")
    p.add_argument("--type", choices=TYPES)
    p.set_defaults(func=_api("run_rules_show"))
    p = rules.add_parser("set", parents=[api], help="change a rule (only the options given)")
    p.add_argument("--type", required=True, choices=TYPES)
    p.add_argument("--validity-days", type=int, metavar="N")
    p.add_argument("--key-type", choices=["rsa", "ec"])
    p.add_argument("--key-size", type=int, metavar="BITS", help="RSA 2048/3072/4096/8192; EC 256")
    p.add_argument("--renewal-days", type=int, metavar="N", help="renew this long before expiry (0: never)")
    p.add_argument("--source", metavar="NAME", help="certificate source (internal, ...)")
    p.add_argument("--template", metavar="NAME", help="enterprise PKI template name ('' clears it)")
    p.set_defaults(func=_api("run_rules_set"))

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


# ---- argument checks (also used by mdm.cli.certs_api) ------------------------------------------
def serial_path(serial: str) -> str:
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
