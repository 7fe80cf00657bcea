"""The device's HTTP client: check-in and command-channel PUTs over TLS (server verified against the
enrollment roots), identifying the device by mutual TLS or by an ``Mdm-Signature`` header."""

from __future__ import annotations

import plistlib
import ssl
from typing import Any, Literal

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm.sim.identity import Identity

Mode = Literal["signature", "mtls"]
CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
COMMAND_TYPE = "application/x-apple-aspen-mdm"


class TransportError(Exception):
    """The server answered with a status a device does not expect, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def client_context(trusted_roots: list[x509.Certificate], identity: Identity | None = None) -> ssl.SSLContext:
    """TLS context trusting ``trusted_roots`` (the system store when empty), optionally presenting
    ``identity`` as the client certificate."""
    if trusted_roots:
        ctx = ssl.create_default_context(
            cadata="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in trusted_roots)
        )
    else:
        ctx = ssl.create_default_context()
    if identity is not None:
        identity.load_into(ctx)
    return ctx


def encode(message: dict[str, Any]) -> bytes:
    """Devices send XML property lists."""
    return plistlib.dumps(message, fmt=plistlib.FMT_XML, sort_keys=True)


class Transport:
    def __init__(
        self,
        identity: Identity,
        *,
        mode: Mode = "signature",
        trusted_roots: list[x509.Certificate] | None = None,
        timeout: float = 30.0,
        user_agent: str = "MDM/1.0",
        sign_always: bool = False,
    ) -> None:
        if mode not in ("signature", "mtls"):
            raise ValueError(f"mode must be 'signature' or 'mtls', not {mode!r}")
        self.identity = identity
        self.mode = mode
        # In mTLS mode a device signs only if the profile asks for SignMessage; callers say so.
        self.sign_always = sign_always or mode == "signature"
        self._ssl = client_context(trusted_roots or [], identity if mode == "mtls" else None)
        self.client = httpx.AsyncClient(verify=self._ssl, timeout=timeout, headers={"User-Agent": user_agent})

    async def put(self, url: str, body: bytes, content_type: str) -> httpx.Response:
        if self.mode == "mtls" and url.startswith("http://"):
            raise TransportError(f"mutual TLS needs an https:// URL, got {url}")
        headers = {"Content-Type": content_type}
        if self.sign_always:
            headers["Mdm-Signature"] = self.identity.sign(body)
        try:
            return await self.client.put(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransportError(f"PUT {url}: {type(exc).__name__}: {exc}") from exc

    async def checkin(self, url: str, message: dict[str, Any]) -> httpx.Response:
        return await self.put(url, encode(message), CHECKIN_TYPE)

    async def connect(self, url: str, message: dict[str, Any]) -> httpx.Response:
        return await self.put(url, encode(message), COMMAND_TYPE)

    async def aclose(self) -> None:
        await self.client.aclose()
