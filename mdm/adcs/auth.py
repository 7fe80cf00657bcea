"""Authentication to the certsrv web server, as httpx ``Auth`` flows: Negotiate (Kerberos from the
service account's private ccache, ``mdm.core.kerberos_login``), NTLM (username and password) and
Basic (https only: the configuration refuses it on http).

Negotiate and NTLM run through pyspnego, which does the token exchanges (SPNEGO, NTLMv2); the
HTTP side of RFC 4559 is the few lines below: the token in ``Authorization``, the server's
answer in ``WWW-Authenticate``, the server's mutual-authentication token verified when it sends
one. The GSSAPI calls may reach the KDC, so they run in a thread, not on the event loop.

The Kerberos libraries are the optional ``eas`` extra, imported when a source is built.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import httpx

from mdm.core.kerberos_login import KerberosLoginError


class AuthFailed(Exception):
    """The authentication could not be done or the server's answer did not verify (the message
    names the step; never a password or a token)."""


def _server_token(response: httpx.Response, scheme: str) -> bytes | None:
    for value in response.headers.get_list("www-authenticate"):
        name, _, data = value.strip().partition(" ")
        if name.lower() == scheme.lower() and data.strip():
            try:
                return base64.b64decode(data.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise AuthFailed(f"the server's {scheme} token is not base64") from None
    return None


class SpnegoAuth(httpx.Auth):
    """RFC 4559 over a pyspnego client context (``protocol`` "negotiate" or "ntlm").

    ``context`` builds a fresh client context per request (Kerberos: a new authenticator each
    time; NTLM: the three legs on one connection)."""

    requires_response_body = True  # the 401 bodies are read (and dropped) before the next leg

    def __init__(self, context: Callable[[], Any], scheme: str = "Negotiate", max_legs: int = 4) -> None:
        self._context = context
        self.scheme = scheme
        self.max_legs = max_legs

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("SpnegoAuth is for httpx.AsyncClient")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        import spnego.exceptions

        try:
            ctx = await asyncio.to_thread(self._context)
            token = await asyncio.to_thread(ctx.step)
        except KerberosLoginError as exc:
            raise AuthFailed(str(exc)) from None
        except spnego.exceptions.SpnegoError as exc:
            raise AuthFailed(f"{self.scheme}: cannot start the authentication: {_reason(exc)}") from None
        for _ in range(self.max_legs):
            request.headers["Authorization"] = f"{self.scheme} {base64.b64encode(token or b'').decode()}"
            response = yield request
            await response.aread()
            server = _server_token(response, self.scheme)
            if response.status_code != 401:
                if server is not None and not ctx.complete:
                    try:  # the server's mutual-authentication token (Kerberos AP-REP)
                        await asyncio.to_thread(ctx.step, server)
                    except spnego.exceptions.SpnegoError as exc:
                        raise AuthFailed(
                            f"{self.scheme}: the server's mutual-authentication token did not verify: "
                            f"{_reason(exc)}") from None
                return
            if server is None or ctx.complete:
                return  # refused: the caller reports the 401
            try:
                token = await asyncio.to_thread(ctx.step, server)
            except spnego.exceptions.SpnegoError as exc:
                raise AuthFailed(
                    f"{self.scheme}: the server's challenge was refused: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def negotiate(credential: Callable[[], Any], hostname: str) -> SpnegoAuth:
    """Kerberos through SPNEGO to HTTP/<hostname>; ``credential`` returns the pyspnego credential
    (``KerberosLogin.credential``: a ccache with a fresh ticket; may raise its login error)."""
    import spnego

    def context() -> Any:
        return spnego.client(credential(), hostname=hostname, service="HTTP", protocol="negotiate")

    return SpnegoAuth(context, "Negotiate")


def ntlm(username: str, password: str, hostname: str) -> SpnegoAuth:
    import spnego

    def context() -> Any:
        return spnego.client(username, password, hostname=hostname, service="HTTP", protocol="ntlm")

    return SpnegoAuth(context, "NTLM")


def basic(username: str, password: str) -> httpx.Auth:
    return httpx.BasicAuth(username, password)
