"""The agent's HTTPS client: HTTP/1.1 over one TLS connection kept alive, the server authenticated
by the SHA-256 pin of its certificate's SubjectPublicKeyInfo (the enrollment package's
``spki_sha256``), not by a CA: a server whose key does not match is refused before a byte of the
request is written.

Small on purpose (asyncio streams, no pool): the benchmark runs thousands of these connections
from one process, and the agent needs to see a dropped connection to retry a request with the
same request id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ssl
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_DROPPED = (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, EOFError)


class KesTransportError(Exception):
    """The server could not be reached, or answered what an agent cannot read."""


class PinMismatch(KesTransportError):
    """The server's public key is not the one pinned by the enrollment package."""


def spki_sha256(cert_der: bytes) -> bytes:
    cert = x509.load_der_x509_certificate(cert_der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def decode_pin(pin: str) -> bytes:
    """A pin as the package carries it (base64, or hex), as 32 bytes."""
    text = pin.strip()
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except ValueError:
        raise KesTransportError(f"spki_sha256 {pin!r} is neither base64 nor hex") from None
    if len(raw) != 32:
        raise KesTransportError(f"spki_sha256 decodes to {len(raw)} bytes, not 32")
    return raw


def tls_context(cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """TLS 1.2+ without CA verification (the pin replaces it), presenting a client certificate
    when given: one-way TLS before the certificate is issued, mutual TLS after."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server is authenticated by its SPKI pin
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class PinnedConnection:
    """One keep-alive HTTPS connection to ``host:port``; reconnects when the server closed it."""

    host: str
    port: int
    pins: tuple[bytes, ...]  # accepted SPKI SHA-256 pins (the M certificate's, the reserve's)
    context: ssl.SSLContext
    server_hostname: str | None = None
    timeout: float = 30.0
    retries: int = 2  # resends after a dropped connection (same bytes, so the same request id)
    _reader: asyncio.StreamReader | None = field(default=None, repr=False)
    _writer: asyncio.StreamWriter | None = field(default=None, repr=False)
    handshakes: int = 0
    resent: int = 0

    async def connect(self) -> None:
        await self.close()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                self.host, self.port, ssl=self.context,
                server_hostname=self.server_hostname or self.host), self.timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise KesTransportError(f"connect {self.host}:{self.port}: {type(exc).__name__}: {exc}") from exc
        self.handshakes += 1
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        actual = spki_sha256(der) if der else b""
        # Every pin compared (constant time each), no early exit on the first match.
        matches = [hmac.compare_digest(actual, pin) for pin in self.pins]
        if not actual or not any(matches):
            writer.close()
            raise PinMismatch(f"{self.host}:{self.port} presented a key that does not match the pin")
        self._reader, self._writer = reader, writer

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def request(self, method: str, path: str, body: bytes = b"", *,
                      headers: dict[str, str] | None = None, keep_alive: bool = True) -> Response:
        """Send one request and read its answer; after a connection dropped before the answer,
        connect again and resend it (at most ``retries`` times)."""
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(body)}", "Connection: " + ("keep-alive" if keep_alive else "close")]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        attempt = 0
        while True:
            fresh = not self.connected
            if fresh:
                await self.connect()
            try:
                response = await asyncio.wait_for(self._exchange(data), self.timeout)
            except _DROPPED as exc:
                await self.close()
                # A reused connection the server had closed: always resend; a fresh one: counted.
                if not fresh:
                    continue
                attempt += 1
                if attempt > self.retries:
                    raise KesTransportError(
                        f"{method} {path}: connection dropped: {type(exc).__name__}") from exc
                self.resent += 1
                continue
            except TimeoutError:
                await self.close()
                raise KesTransportError(f"{method} {path}: no answer within {self.timeout:.0f}s") from None
            if not keep_alive or response.headers.get("connection", "").lower() == "close":
                await self.close()
            return response

    async def _exchange(self, data: bytes) -> Response:
        assert self._reader is not None and self._writer is not None
        self._writer.write(data)
        await self._writer.drain()
        return await read_response(self._reader)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            except (OSError, TimeoutError, ssl.SSLError):
                pass


async def read_response(reader: asyncio.StreamReader) -> Response:
    status_line = await reader.readuntil(b"\r\n")
    if not status_line.strip():
        raise EOFError("empty status line")
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise KesTransportError(f"not an HTTP/1.1 answer: {status_line[:60]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            total += size
            if total > MAX_RESPONSE_BYTES:
                raise KesTransportError("answer too large")
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        body = b"".join(chunks)
    else:
        length = int(headers.get("content-length", "0"))
        if length > MAX_RESPONSE_BYTES:
            raise KesTransportError("answer too large")
        body = await reader.readexactly(length) if length else b""
    return Response(status, headers, body)
