"""A flood of unauthenticated requests at a fixed rate, run as a separate process by the latency
test: ``python tests/flood_client.py --port P --ca root.pem --rate 1000``.

Open loop: each connection writes the requests due every 5 ms in one go (HTTP/1.1 pipelining)
and a reader counts the answers, so a slow server gets the offered rate anyway (up to TCP
back-pressure, which ``sent`` then reflects) instead of slowing the flood down. Cheap on purpose:
on a small machine the flooder must not be what starves the server.

It connects, prints ``ready``, then obeys lines on standard input: ``on`` starts flooding, ``off``
stops (each answered ``ok``); at end of input it prints one JSON line: requests sent, answers by
status, seconds spent flooding.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import plistlib
import re
import ssl
import sys
import time
from collections import Counter

BODY = plistlib.dumps({"UDID": "FLOOD-0000", "Status": "Idle"})
TICK = 0.005
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


def _requests(host: str) -> list[bytes]:
    """Two kinds of rejected identity: no signature at all, and a signature that is not CMS."""
    head = f"PUT /mdm/server HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-apple-aspen-mdm\r\n"
    garbage = base64.b64encode(os.urandom(48)).decode()
    length = f"Content-Length: {len(BODY)}\r\n"
    return [
        (head + length + "\r\n").encode() + BODY,
        (head + f"Mdm-Signature: {garbage}\r\n" + length + "\r\n").encode() + BODY,
    ]


class Flood:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.statuses: Counter[int] = Counter()
        self.sent = 0
        self.seconds = 0.0
        self.on = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def connect(self, port: int, ctx: ssl.SSLContext, connections: int) -> None:
        for _ in range(connections):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
            )
            self.writers.append(writer)
            self.tasks.append(asyncio.create_task(self._read(reader)))
            offset = TICK * len(self.writers) / connections  # staggered: no synchronised bursts
            self.tasks.append(asyncio.create_task(self._send(writer, self.rate / connections, offset)))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Counts status lines; cheap on purpose."""
        tail = b""
        while chunk := await reader.read(262144):
            data = tail + chunk
            for status in _STATUS.findall(data):
                self.statuses[int(status)] += 1
            cut = data.rfind(b"HTTP/1.1 ")
            tail = data[cut:] if cut >= 0 and len(data) - cut < 13 else b""

    async def _send(self, writer: asyncio.StreamWriter, rate: float, offset: float) -> None:
        requests = _requests("localhost")
        done = 0
        while True:
            await self.on.wait()
            await asyncio.sleep(offset)
            started, due_before = time.monotonic(), done
            while self.on.is_set():
                # Every tick, the requests now due, in one write (one TLS record, one syscall).
                due = due_before + int((time.monotonic() - started) * rate) - done
                if due > 0:
                    writer.write(b"".join(requests[(done + i) % len(requests)] for i in range(due)))
                    done += due
                    self.sent += due
                    await writer.drain()
                await asyncio.sleep(TICK)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    flood = Flood(args.rate)
    await flood.connect(args.port, ssl.create_default_context(cafile=args.ca), args.connections)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    since = 0.0
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line == "on" and not flood.on.is_set():
            since = time.monotonic()
            flood.on.set()
        elif line == "off" and flood.on.is_set():
            flood.on.clear()
            flood.seconds += time.monotonic() - since
        print("ok", flush=True)
    if flood.on.is_set():
        flood.on.clear()
        flood.seconds += time.monotonic() - since
    for _ in range(100):  # the last answers (at most 10 s)
        if sum(flood.statuses.values()) >= flood.sent:
            break
        await asyncio.sleep(0.1)
    for writer in flood.writers:
        writer.close()
    report = {"sent": flood.sent, "statuses": dict(flood.statuses), "seconds": flood.seconds}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
