"""``mdm dev``: development helpers. ``mdm dev fake-apns`` runs the APNs contract fake (HTTP/2,
mutual TLS, Apple's errors) so that a server or ``mdm bench push`` can be pointed at it:
``apns.base_url`` = the printed URL, ``apns.ca_file`` = the printed CA, and the printed client
certificate and key as the push identity. ``mdm dev fake-fcm`` runs the FCM fake (OAuth2 token
endpoint and ``messages:send``) for a service account: ``fcm.base_url`` and ``fcm.token_url``
are printed."""

from __future__ import annotations

import argparse
from pathlib import Path

from mdm.cli.common import Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser("dev", help="development helpers (contract fakes)")
    kinds = p.add_subparsers(dest="tool", metavar="TOOL", required=True)
    f = kinds.add_parser("fake-apns", help="run the APNs contract fake", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--port", type=int, default=2197, help="port (default 2197, 0: any free port)")
    f.add_argument("--host", default="127.0.0.1")
    f.add_argument("--cert-dir", type=Path, required=True,
                   help="test push CA, gateway and client certificates (made here when missing)")
    f.add_argument("--quiet", action="store_true", help="do not print every accepted push")
    f.add_argument("--control-port", type=int,
                   help="also serve the JSON control endpoint (POST /control, GET /stats) on 127.0.0.1")
    f.set_defaults(func=run_fake_apns)
    g = kinds.add_parser("fake-fcm", help="run the FCM contract fake (OAuth token endpoint, messages:send)")
    g.add_argument("--service-account", required=True, help="the service-account JSON it accepts")
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", type=int, default=8090, help="port (default 8090)")
    g.set_defaults(func=run_fake_fcm)


def run_fake_fcm(args: argparse.Namespace) -> int:
    from mdm.devfakes.fcm import main

    main(["--service-account", args.service_account, "--host", args.host, "--port", str(args.port)])
    return 0


def run_fake_apns(args: argparse.Namespace) -> int:
    from mdm.devfakes.run_apns import run

    run(args.cert_dir, args.host, args.port, quiet=args.quiet, control_port=args.control_port)
    return 0
