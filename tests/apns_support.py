"""APNs test helpers: a test push CA with client certificates, the contract fake on a real TLS
socket, a client configured against it, and a tiny asyncio HTTP CONNECT proxy with Basic auth."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from mdm.devfakes.apns import FakeApns
from mdm.devfakes.certs import FakeCerts, Issued, identity, make_ca, push_certificate, write_fake_certs
from mdm.push.apns import ApnsClient
from mdm.push.config import ApnsConfig
from mdm.push.types import ApnsIdentity, ProxySettings, WakeTarget

TOKEN = "ab" * 32


def target(token: str = TOKEN, magic: str = "magic-1234") -> WakeTarget:
    return WakeTarget(device_id=1, token=token, push_magic=magic)


@dataclass
class Env:
    certs: FakeCerts
    push_ca: Issued
    fake: FakeApns
    identity: ApnsIdentity

    def config(self, **overrides: object) -> ApnsConfig:
        values: dict[str, object] = {"base_url": self.fake.url, "ca_file": str(self.certs.server_ca),
                                     "timeout_seconds": 5.0, "connections": 2}
        values.update(overrides)
        return ApnsConfig.model_validate(values)

    def client(self, proxy: ProxySettings | None = None, **overrides: object) -> ApnsClient:
        return ApnsClient(self.config(**overrides), self.identity, proxy=proxy)

    def other_identity(self, topic: str | None = None) -> ApnsIdentity:
        """A renewed certificate from the same push CA (same topic unless given)."""
        return identity(push_certificate(self.push_ca, topic or self.identity.topic))


@contextlib.asynccontextmanager
async def apns_env(tmp: Path, **fake_options: object) -> AsyncIterator[Env]:
    certs = write_fake_certs(tmp)
    # write_fake_certs made its own push CA; make one we keep the key of, and trust that instead.
    push_ca = make_ca("test push CA")
    certs.push_ca.write_bytes(push_ca.cert_pem)
    issued = push_certificate(push_ca)
    fake = FakeApns(push_ca=certs.push_ca, server_cert=certs.server_cert, server_key=certs.server_key,
                    **fake_options)  # type: ignore[arg-type]
    await fake.start()
    try:
        yield Env(certs, push_ca, fake, identity(issued))
    finally:
        await fake.stop()


class ConnectProxy:
    """An HTTP CONNECT proxy: Basic auth when ``login`` is set, then bytes both ways."""

    def __init__(self, login: str = "", password: str = "") -> None:
        self.login, self.password = login, password
        self.port = 0
        self.tunnels = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, authority, _ = lines[0].split(" ")
        pairs = (line.split(":", 1) for line in lines[1:] if line)
        headers = {k.strip().lower(): v.strip() for k, v in pairs}
        expected = "Basic " + base64.b64encode(f"{self.login}:{self.password}".encode()).decode()
        if method != "CONNECT" or (self.login and headers.get("proxy-authorization") != expected):
            self.refused += 1
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        host, port = authority.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self.tunnels += 1
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for task in (asyncio.ensure_future(pipe(reader, up_writer)),
                     asyncio.ensure_future(pipe(up_reader, writer))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
