"""``mdm sim ios``: run one simulated iPhone against a server, for manual testing.

It downloads the enrollment profile from the one-time link, verifies its signature, installs the
identity, checks in (Authenticate + TokenUpdate) and polls the command channel N times, printing
what it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mdm.cli.common import CliError, Subparsers

if TYPE_CHECKING:
    from cryptography import x509

# The simulator (crypto, aiohttp) is imported when it runs, not for `mdm sim --help`.


def register(sub: Subparsers) -> None:
    p = sub.add_parser("sim", help="simulated devices (manual testing)")
    platforms = p.add_subparsers(dest="platform", metavar="PLATFORM", required=True)
    ios = platforms.add_parser("ios", help="enroll a simulated iPhone from a link and answer commands")
    ios.add_argument("--url", required=True, help="the enrollment link (one-time URL from `mdm enroll ios`)")
    ios.add_argument(
        "--ca", metavar="ROOT.pem", help="trusted root CA (default: trust the profile's own root)"
    )
    ios.add_argument(
        "--mode",
        choices=("signature", "mtls"),
        default="signature",
        help="identify by Mdm-Signature header (default) or by TLS client certificate",
    )
    ios.add_argument("--polls", type=int, default=1, help="command-channel sessions to run (default 1)")
    ios.add_argument("--interval", type=float, default=5.0, help="seconds between sessions (default 5)")
    ios.add_argument("--busy-polls", type=int, default=0, help="answer NotNow during the first K sessions")
    ios.add_argument("--supervised", action="store_true", help="behave as a supervised device")
    ios.add_argument(
        "--server-base",
        metavar="URL",
        help="send check-ins and polls to this scheme://host:port instead of the profile's",
    )
    ios.add_argument("--seed", type=int, help="seed for the device's serial number, UDID, IMEI...")
    ios.set_defaults(func=run_ios)
    kes = platforms.add_parser("kes", help="enroll a simulated KES (Android) agent from its package and sync")
    source = kes.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="the one-time link (from `mdm enroll android`)")
    source.add_argument("--package", metavar="FILE",
                        help="the package file (`mdm enroll android --file`) or the QR code's text")
    kes.add_argument("--ca", metavar="ROOT.pem", help="root CA of the link's web server (default: system)")
    kes.add_argument("--host", help="talk to this host instead of the package's (the pin still applies)")
    kes.add_argument("--syncs", type=int, default=3, help="syncs to run after enrolling (default 3)")
    kes.add_argument("--wait", type=float, default=0.0,
                     help="hold each sync open as a long poll up to this many seconds (default 0)")
    kes.add_argument("--seed", type=int, help="seed for the device's Android id, serial, IMEI...")
    kes.set_defaults(func=run_kes)


def _roots(path: str | None) -> list[x509.Certificate]:
    from cryptography import x509

    if not path:
        return []
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except OSError as exc:
        raise CliError(f"--ca: cannot read {path}: {exc.strerror}", exit_code=2) from None
    except ValueError:
        raise CliError(f"--ca: {path} is not a PEM certificate file", exit_code=2) from None


async def _run(args: argparse.Namespace, roots: list[x509.Certificate]) -> None:
    from mdm.sim.device import DeviceGone, SimulatedDevice
    from mdm.sim.facts import HardwareFacts

    facts = HardwareFacts.generate(random.Random(args.seed) if args.seed is not None else None)  # noqa: S311
    async with SimulatedDevice(
        facts, mode=args.mode, trusted_roots=roots, supervised=args.supervised, server_base=args.server_base
    ) as device:
        print(
            f"device {facts.marketing_name} ({facts.product_name}) iOS {facts.os_version}"
            f" ({facts.build_version}) serial {facts.serial_number} UDID {facts.udid}"
        )
        profile = await device.enroll(args.url)
        signer = profile.signed.signer
        print(
            f"profile {profile.identifier}: signature verified"
            f" ({signer.subject.rfc4514_string() if signer else 'unsigned'})"
            f"{'' if roots else ' against its own root payload'}"
        )
        assert device.identity is not None
        print(
            f"identity ({profile.identity_kind}): CN={device.identity.common_name}"
            f" serial {device.identity.serial_hex}"
        )
        await device.check_in()
        print(f"checked in at {profile.mdm.check_in_url} (Authenticate, TokenUpdate) using {args.mode}")
        device.state.busy_polls = args.busy_polls
        for i in range(args.polls):
            try:
                result = await device.poll()
            except DeviceGone:
                break
            answered = ", ".join(f"{r} -> {s}" for r, s in result.statuses) or "nothing queued"
            print(f"poll {i + 1}: {answered}")
            if device.state.wiped:
                print("device erased: it stops talking to the server")
                break
            if device.state.unenrolled:
                print("MDM profile removed: device checked out")
                break
            if i + 1 < args.polls:
                await asyncio.sleep(args.interval)


def run_ios(args: argparse.Namespace) -> int:
    if args.polls < 0 or args.interval < 0 or args.busy_polls < 0:
        raise CliError("--polls, --interval and --busy-polls must not be negative", exit_code=2)
    from mdm.sim.profile import ProfileError
    from mdm.sim.transport import TransportError

    roots = _roots(args.ca)
    try:
        asyncio.run(_run(args, roots))
    except ProfileError as exc:
        raise CliError(f"profile rejected: {exc}") from None
    except TransportError as exc:
        raise CliError(str(exc)) from None
    sys.stdout.flush()
    return 0


async def _run_kes(args: argparse.Namespace, package_text: bytes | None) -> None:
    import ssl

    from mdm.sim.kes import package as kes_package
    from mdm.sim.kes.agent import DeviceGone, KesAgent
    from mdm.sim.kes.facts import AndroidFacts

    if args.url:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=args.ca) if args.ca else True
        package = await kes_package.download(args.url, verify=verify)
    else:
        assert package_text is not None
        package = kes_package.EnrollmentPackage.parse(package_text)
    facts = AndroidFacts.generate(random.Random(args.seed) if args.seed is not None else None)  # noqa: S311
    agent = KesAgent(package, facts, host=args.host)
    print(f"device {facts.marketing_name} ({facts.manufacturer} {facts.model}) Android {facts.os_version}"
          f" id {facts.android_id}; server {package.host}:{package.port}, key pinned")
    try:
        await agent.enroll()
        assert agent.identity is not None
        print(f"registered (device {agent.device_id}); certificate serial {agent.identity.serial_hex}: "
              "mutual TLS from now on")
        for i in range(args.syncs):
            before = len(agent.executor.executed)
            try:
                answer = await agent.sync(wait=args.wait)
            except DeviceGone:
                break
            executed = agent.executor.executed[before:]
            done = ", ".join(f"{o.type} -> {'ok' if o.ok else o.error}" for o in executed) or "no command"
            policy = f"; policy {answer.policy_version} applied" if answer.policy_version else ""
            print(f"sync {i + 1}: {done}{policy}")
            if agent.state.gone:
                await agent.settle()
                gone = "wiped" if agent.state.wiped else "unenrolled"
                print(f"device {gone}: it stops talking to the server")
                break
        if agent.owes_report and not agent.state.gone:
            await agent.settle()
    finally:
        await agent.close()


def run_kes(args: argparse.Namespace) -> int:
    if args.syncs < 0 or args.wait < 0:
        raise CliError("--syncs and --wait must not be negative", exit_code=2)
    from mdm.sim.kes.http import KesTransportError
    from mdm.sim.kes.package import PackageError
    from mdm.sim.kes.protocol import KesError

    try:
        package_text = Path(args.package).read_bytes() if args.package else None
    except OSError as exc:
        raise CliError(f"--package: cannot read {args.package}: {exc.strerror}", exit_code=2) from None
    try:
        asyncio.run(_run_kes(args, package_text))
    except (PackageError, KesTransportError, KesError) as exc:
        raise CliError(str(exc)) from None
    sys.stdout.flush()
    return 0
