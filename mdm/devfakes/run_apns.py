"""Run the APNs contract fake by hand (``mdm dev fake-apns``) or as the benchmark's subprocess
(``python -m mdm.devfakes.run_apns``). Certificates come from ``--cert-dir`` (made there when
missing); the first line on stdout is JSON: the port, the URL and the files a client needs."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from mdm.devfakes.apns import FakeApns
from mdm.devfakes.apns_control import start_control, stats
from mdm.devfakes.certs import FakeCerts, write_fake_certs


def cert_files(directory: Path) -> FakeCerts:
    names = ("push-ca.pem", "server-ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    if all((directory / name).exists() for name in names):
        return FakeCerts(directory, *(directory / name for name in names))
    return write_fake_certs(directory)


async def serve(cert_dir: Path, host: str, port: int, record: bool, quiet: bool,
                control_port: int | None = None) -> None:
    certs = cert_files(cert_dir)
    counter = {"n": 0}

    def on_push(token: str, topic: str, body: dict[str, object]) -> None:
        counter["n"] += 1
        if not quiet:
            print(f"push {counter['n']}: token {token[:8]}… topic {topic}", file=sys.stderr, flush=True)

    fake = FakeApns(push_ca=certs.push_ca, server_cert=certs.server_cert, server_key=certs.server_key,
                    host=host, port=port, record=record, on_push=None if quiet else on_push)
    await fake.start()
    runner = await start_control(fake, control_port) if control_port is not None else None
    print(json.dumps({
        "control": f"http://127.0.0.1:{control_port}" if control_port is not None else None,
        "port": fake.port,
        "url": fake.url,
        "ca_file": str(certs.server_ca),
        "push_ca": str(certs.push_ca),
        "client_cert": str(certs.client_cert),
        "client_key": str(certs.client_key),
    }), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await fake.stop()
        print(json.dumps(stats(fake)), file=sys.stderr, flush=True)


def run(cert_dir: Path, host: str = "127.0.0.1", port: int = 0, *, record: bool = False,
        quiet: bool = False, control_port: int | None = None) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(cert_dir, host, port, record, quiet, control_port))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mdm.devfakes.run_apns")
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--control-port", type=int)
    args = parser.parse_args(argv)
    run(args.cert_dir, args.host, args.port, quiet=args.quiet, control_port=args.control_port)


if __name__ == "__main__":
    main()
