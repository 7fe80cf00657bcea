"""An outbound HTTP ``CONNECT`` tunnel ([push] proxy_*): the TLS session to the gateway runs
through it. Errors name the proxy and its answer, never the password."""

from __future__ import annotations

import asyncio
import base64
import socket

from mdm.push.types import ProxySettings

MAX_ANSWER = 16 * 1024


class ProxyError(Exception):
    """The proxy is unreachable or refused the tunnel; the message is safe to log."""


async def open_tunnel(proxy: ProxySettings, host: str, port: int, wait: float) -> socket.socket:
    """A connected, non-blocking socket to ``host:port`` through the proxy (TLS not started)."""
    loop = asyncio.get_running_loop()
    where = f"proxy {proxy.host}:{proxy.port}"
    try:
        infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ProxyError(f"{where}: cannot resolve: {exc.strerror or exc}") from None
    sock: socket.socket | None = None
    last: OSError | None = None
    for family, kind, proto, _name, address in infos:
        candidate = socket.socket(family, kind, proto)
        candidate.setblocking(False)
        try:
            async with asyncio.timeout(wait):
                await loop.sock_connect(candidate, address)
        except (OSError, TimeoutError) as exc:
            candidate.close()
            last = exc if isinstance(exc, OSError) else OSError("timed out")
            continue
        sock = candidate
        break
    if sock is None:
        detail = (last.strerror or str(last)) if last else "no address"
        raise ProxyError(f"{where} unreachable: {detail}")
    try:
        await _handshake(loop, sock, proxy, host, port, wait, where)
    except BaseException:
        sock.close()
        raise
    return sock


async def _handshake(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    proxy: ProxySettings,
    host: str,
    port: int,
    wait: float,
    where: str,
) -> None:
    lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
    if proxy.login:
        credentials = base64.b64encode(f"{proxy.login}:{proxy.password}".encode()).decode("ascii")
        lines.append(f"Proxy-Authorization: Basic {credentials}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    answer = b""
    try:
        async with asyncio.timeout(wait):
            await loop.sock_sendall(sock, request)
            # Read byte-wise up to the end of the header: nothing of the TLS stream may be consumed.
            while not answer.endswith(b"\r\n\r\n"):
                chunk = await loop.sock_recv(sock, 1)
                if not chunk:
                    raise ProxyError(f"{where} closed the connection during CONNECT")
                answer += chunk
                if len(answer) > MAX_ANSWER:
                    raise ProxyError(f"{where}: answer to CONNECT too long")
    except TimeoutError:
        raise ProxyError(f"{where}: no answer to CONNECT within {wait:g}s") from None
    except OSError as exc:
        raise ProxyError(f"{where}: {exc.strerror or exc}") from None
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    if 200 <= code < 300:
        return
    text = parts[2] if len(parts) == 3 else ""
    if code == 407:
        hint = "wrong login or password" if proxy.login else "the proxy wants a login (push.proxy_login)"
        raise ProxyError(f"{where} refused the tunnel: 407 {text} ({hint})")
    raise ProxyError(f"{where} refused CONNECT {host}:{port}: {code or status_line[:60]} {text}".rstrip())
