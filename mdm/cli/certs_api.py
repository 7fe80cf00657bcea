"""``mdm certs issue|list|show|revoke|rules``: the certificate life cycle through the admin API of
the running server (so that a revocation applies at once, in the CRL and on every listener).
The arguments are parsed in ``mdm.cli.certs_cmd``."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

from mdm.cli import output
from mdm.cli.certs_cmd import API, MIN_PREFIX, parse_reason, serial_path
from mdm.cli.certs_io import password, read_input, write_private
from mdm.cli.client import ApiClient, error_line, settings_from
from mdm.cli.common import CliError


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(settings_from(args))


def run_issue(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"user": args.user, "type": args.type, "create_user": args.create_user}
    if args.email:
        body["email"] = args.email
    if args.csr:
        if args.p12:
            raise CliError("--p12 and --csr exclude each other (with a CSR the key stays with you)", 2)
        csr = read_input(args.csr, "--csr")
        # PEM as is; a DER request travels base64-encoded
        is_pem = csr.lstrip().startswith(b"-----")
        body["csr"] = csr.decode(errors="replace") if is_pem else base64.b64encode(csr).decode()
    elif args.p12:
        body["p12_password"] = password(args.password, "PKCS#12 password: ", required=True)
        body["legacy_p12"] = args.legacy_p12
    else:
        raise CliError(
            "give --p12 FILE (a key pair is generated and written there) or --csr FILE "
            "(your request is certified)",
            exit_code=2,
        )
    with _client(args) as client:
        response = client.send("POST", API, json=body)
    if response.status_code >= 400:  # 422 certificate_denied (the CA's words), 503 source unavailable
        raise CliError(error_line(response))
    result = response.json()
    if response.status_code == 202:
        from mdm.cli.certs_requests import print_pending

        return print_pending(args, result)
    if args.p12:
        write_private(args.p12, base64.b64decode(result["pkcs12"]))
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
        cert = client.get(f"{API}/{serial_path(args.serial)}")
    if args.pem:
        print(cert["pem"], end="")
    elif args.json:
        output.emit_json(cert)
    else:
        output.fields([(k, cert[k]) for k in cert if k != "pem"])
    return 0


def resolve_serial(client: ApiClient, text: str) -> str:
    """The full serial of the one certificate whose serial is ``text`` or starts with it. Several
    (or none) is an error that names them; nothing is revoked then."""
    clean = serial_path(text)
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
