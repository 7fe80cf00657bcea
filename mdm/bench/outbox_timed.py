"""``python -m mdm.bench.outbox_timed``: the generic endpoint's contract fake
(``mdm.devfakes.core_receiver``, unchanged in what it verifies and records) that also writes one
line per request to a timings file: arrival (monotonic seconds), seconds until the answer, status.
The catch-up benchmark reads the batch round trips from it (the sender sends one batch at a time,
so the gap between arrivals is the sender's whole cycle: send, answer, mark, next read)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from aiohttp import web

from mdm.devfakes.core_receiver import CoreReceiver, serve_forever


@dataclass
class TimedReceiver(CoreReceiver):
    timings_file: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._timings: IO[str] | None = None

    async def start(self) -> str:
        if self.timings_file is not None and self._timings is None:
            self._timings = self.timings_file.open("a")
        return await super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._timings is not None:
            self._timings.close()
            self._timings = None

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        arrival = time.monotonic()
        response = await super()._receive(request)
        if self._timings is not None:
            self._timings.write(f"{arrival:.6f} {time.monotonic() - arrival:.6f} {response.status}\n")
            self._timings.flush()
        return response


async def _serve(args: argparse.Namespace, key: bytes | None) -> None:
    fake = TimedReceiver(args.cert, args.key, args.client_ca, key, host=args.host, port=args.port,
                         record_file=Path(args.record) if args.record else None,
                         timings_file=Path(args.timings) if args.timings else None, keep_events=False)
    await serve_forever(fake, args.control_port, args.host, "core receiver (timed)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mdm.bench.outbox_timed", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca", default=None)
    parser.add_argument("--hmac-key-file", default=None)
    parser.add_argument("--record", default=None)
    parser.add_argument("--timings", default=None)
    parser.add_argument("--control-port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        key = Path(args.hmac_key_file).read_bytes().strip() if args.hmac_key_file else None
        asyncio.run(_serve(args, key))


if __name__ == "__main__":
    main()
