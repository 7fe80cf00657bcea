"""Who is on the other end of a request: the TCP peer address, whether it lies in a configured
list of networks (trusted proxies, allow-lists), and what a trusted proxy says about the scheme
the client used. Only the TCP peer decides trust: forwarded headers are read only from a peer that
is itself trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(items: Iterable[str]) -> tuple[Network, ...]:
    """Parse once (at start-up); the configuration has validated every item."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def peer_address(request: web.Request) -> str | None:
    # aiohttp records the TCP peer when the request arrives (no header can change it); it stays
    # known after the client has gone.
    return request.remote


def peer_in(request: web.Request, nets: tuple[Network, ...]) -> bool:
    if not nets:
        return False
    peer = peer_address(request)
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return any(address in net for net in nets)


def forwarded_proto(request: web.Request) -> str | None:
    """The scheme the nearest proxy says the client used: the last element of ``Forwarded``
    (RFC 7239) and the last value of ``X-Forwarded-Proto``. When both are present they must agree;
    otherwise the answer is None (not believed)."""
    said: set[str] = set()
    if "Forwarded" in request.headers:
        elements = request.forwarded
        proto = elements[-1].get("proto") if elements else None
        if proto is None:
            return None
        said.add(proto.strip().lower())
    values = request.headers.getall("X-Forwarded-Proto", [])
    if values:
        said.add(values[-1].split(",")[-1].strip().lower())
    return said.pop() if len(said) == 1 else None


def forwarded_for(request: web.Request) -> str | None:
    """The client address the nearest proxy reports: the last ``for=`` of ``Forwarded`` (RFC 7239)
    and the last value of ``X-Forwarded-For``, read as ``forwarded_proto`` reads the scheme (when
    both are present they must agree). None when absent, disagreeing or not an IP address (an
    obfuscated identifier, ``unknown``). Callers believe it only when the TCP peer is a trusted
    proxy (``peer_in``)."""
    said: set[str] = set()
    if "Forwarded" in request.headers:
        elements = request.forwarded
        value = elements[-1].get("for") if elements else None
        if value is None:
            return None
        said.add(value)
    values = request.headers.getall("X-Forwarded-For", [])
    if values:
        said.add(values[-1].split(",")[-1])
    addresses = {_address(item) for item in said}
    if len(addresses) != 1:
        return None
    return addresses.pop()


def _address(value: str) -> str | None:
    """``198.51.100.7``, ``198.51.100.7:4711``, ``[2001:db8::1]:4711`` → the address; else None."""
    text = value.strip().strip('"')
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
