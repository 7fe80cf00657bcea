"""Helpers for the FCM tests: a generated service account (RSA key, JSON in a temp dir), the FCM
contract fake started on a real socket, and a small HTTP CONNECT proxy with Basic login."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mdm.devfakes.fcm import FcmFake
from mdm.push.config import FcmConfig
from mdm.push.fcm.client import FcmClient
from mdm.push.fcm.oauth import ServiceAccount
from mdm.push.types import ProxySettings

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # one per test session


def key_pem(key: rsa.RSAPrivateKey = _KEY) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def account_json(token_uri: str, **overrides: Any) -> dict[str, Any]:
    data = {
        "type": "service_account", "project_id": "mdm-test", "private_key_id": "k1",
        "private_key": key_pem(), "client_email": "push@mdm-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri,
    }
    data.update(overrides)
    return data


def write_account(path: Path, token_uri: str, **overrides: Any) -> Path:
    path.write_text(json.dumps(account_json(token_uri, **overrides)), encoding="utf-8")
    return path


@dataclass
class FcmEnv:
    fake: FcmFake
    account: ServiceAccount
    tmp: Path
    clients: list[FcmClient] = field(default_factory=list)

    def client(self, *, proxy: ProxySettings | None = None, **config: Any) -> FcmClient:
        assert self.fake.urls is not None
        values: dict[str, Any] = {"base_url": self.fake.urls.base_url}
        values.update(config)
        c = FcmClient(FcmConfig(**values), self.account, proxy=proxy)
        self.clients.append(c)
        return c


@contextlib.asynccontextmanager
async def fcm_env(tmp: Path, **fake_options: Any) -> AsyncIterator[FcmEnv]:
    fake = FcmFake(**fake_options)
    urls = await fake.start()
    account = ServiceAccount.load(write_account(tmp / "sa.json", urls.token_url))
    fake.add_service_account(account)
    env = FcmEnv(fake, account, tmp)
    try:
        yield env
    finally:
        for c in env.clients:
            await c.close()
        await fake.stop()


@dataclass
class ConnectProxy:
    """An HTTP CONNECT proxy (RFC 9110 §9.3.6) with optional Basic login: records each CONNECT
    target and tunnels bytes both ways."""

    login: str = ""
    password: str = ""
    connects: list[str] = field(default_factory=list)
    refused: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:] if line)}
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if self.login:
                want = "Basic " + base64.b64encode(f"{self.login}:{self.password}".encode()).decode()
                if headers.get("proxy-authorization") != want:
                    self.refused += 1
                    writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                 b"Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
                    return
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self.connects.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.close()


Clock = Callable[[], float]


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
