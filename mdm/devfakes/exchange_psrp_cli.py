"""``python -m mdm.devfakes.exchange_psrp`` (which calls ``main`` here): the Exchange PSRP fake as
a process, for benchmarks.

Prints ``URL <url>`` (and ``CA <file>`` when it made its own certificate) on stdout, then serves
until SIGTERM/SIGINT. Kerberos: ``KRB5_CONFIG`` from the environment, the service keytab from
``--keytab``. ``--principal-map "svc@REALM=*;ro@REALM=Get-CASMailbox,Get-AcceptedDomain"``
limits what each principal may run (default: everyone may run everything).
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mdm.devfakes.exchange_org import Organisation
from mdm.eas.cmdlets import REQUIRED_CMDLETS, Naming


def parse_principal_map(text: str) -> dict[str, set[str]] | None:
    """``"a@R=*;b@R=Get-CASMailbox,Get-AcceptedDomain;c@R="`` -> permissions (None: all)."""
    if not text.strip():
        return None
    permissions: dict[str, set[str]] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        principal, _, cmdlets = entry.partition("=")
        names = {c.strip() for c in cmdlets.split(",") if c.strip()}
        permissions[principal.strip()] = set(REQUIRED_CMDLETS) if names == {"*"} else names
    return permissions


def main(make_fake: Callable[..., Any], argv: list[str] | None = None) -> int:
    """``make_fake``: ``ExchangePsrpFake`` (passed in by ``exchange_psrp``, which runs this)."""
    parser = argparse.ArgumentParser(prog="python -m mdm.devfakes.exchange_psrp")
    parser.add_argument("--mailboxes", type=int, default=100)
    parser.add_argument("--devices", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--domains", default="corp.example.com",
                        help="comma-separated; the first is the current domain")
    parser.add_argument("--naming", choices=[n.value for n in Naming], default="2013")
    parser.add_argument("--keytab", type=Path, required=True)
    parser.add_argument("--principal-map", default="")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--url-host", default="localhost")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", action="store_true", help="HTTPS with a generated certificate")
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--record-calls", action="store_true")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    org = Organisation.generate(mailboxes=args.mailboxes, devices=args.devices, seed=args.seed,
                               domains=tuple(d.strip() for d in args.domains.split(",") if d.strip()),
                               naming=Naming(args.naming), record_calls=args.record_calls)
    org.permissions = parse_principal_map(args.principal_map)
    fake = make_fake(org, keytab=args.keytab, tls=args.tls, tls_cert=args.tls_cert,
                            tls_key=args.tls_key, host=args.host, port=args.port,
                            url_host=args.url_host)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    fake.start()
    print(f"URL {fake.url}", flush=True)
    if fake.ca_file is not None:
        print(f"CA {fake.ca_file}", flush=True)
    print(f"READY {time.perf_counter() - started:.2f}s", flush=True)
    try:
        done.wait()
    finally:
        fake.close()
    return 0

