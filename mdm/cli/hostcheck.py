"""Can devices reach the public host name? ``mdm init`` asks before it writes anything.

The name goes into every URL handed to devices (enrollment links, the MDM server and check-in
URLs in profiles) and into the server certificates. ``localhost`` or a name that resolves only to
loopback addresses works for ``mdm sim ios`` on the same machine and for nothing else: a loud
warning, not a refusal (a fresh box's FQDN often maps to 127.0.1.1, and the README's install
command must still work there). A name given explicitly that does not resolve at all is refused.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

RESOLVE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Verdict:
    name: str
    addresses: tuple[str, ...]
    loopback: bool  # devices cannot reach it
    unresolved: str | None  # why resolution failed, if it did


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def resolve(name: str, timeout: float = RESOLVE_TIMEOUT_SECONDS) -> tuple[tuple[str, ...], str | None]:
    """(addresses, None) or ((), reason). getaddrinfo cannot be cancelled, so it runs in a daemon
    thread that is abandoned after ``timeout`` (a DNS server that does not answer)."""
    result: list[tuple[tuple[str, ...], str | None]] = []

    def work() -> None:
        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
            result.append((tuple(sorted({str(info[4][0]) for info in infos})), None))
        except (OSError, UnicodeError) as exc:
            result.append(((), str(getattr(exc, "strerror", None) or exc)))

    thread = threading.Thread(target=work, name="resolve-hostname", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        return (), f"no answer within {timeout:g} s"
    return result[0]


def check(name: str, *, resolve_name: bool = True) -> Verdict:
    lowered = name.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(".localhost"):
        return Verdict(name, (), True, None)
    try:
        ipaddress.ip_address(lowered.strip("[]"))
        return Verdict(name, (lowered,), _is_loopback(lowered.strip("[]")), None)
    except ValueError:
        pass
    if not resolve_name:
        return Verdict(name, (), False, None)
    addresses, problem = resolve(name)
    if problem is not None:
        return Verdict(name, (), False, problem)
    return Verdict(name, addresses, all(_is_loopback(a) for a in addresses), None)


def refusal(verdict: Verdict, source: str) -> str:
    return (
        f"the public host name {verdict.name!r} ({source}) does not resolve ({verdict.unresolved}): "
        "devices could not reach the server by it. Use a name that resolves to an address the devices "
        "can reach (DNS, or /etc/hosts for a test), or pass --no-resolve-check if its DNS record comes "
        "later. Nothing was written"
    )


def warning_lines(verdict: Verdict, source: str, data_dir: Path) -> list[str]:
    """The loud warning for a loopback or unresolvable name (empty if the name looks fine)."""
    if verdict.unresolved is not None:
        problem = f"does not resolve ({verdict.unresolved})"
    elif verdict.loopback:
        shown = f" (resolves to {', '.join(verdict.addresses)})" if verdict.addresses else ""
        problem = f"is a loopback name{shown}"
    else:
        return []
    return [
        "=" * 78,
        f"WARNING: the public host name {verdict.name!r} ({source}) {problem}.",
        "Devices cannot reach this server by it, yet enrollment links, the MDM server URL in",
        "profiles and the server certificates use it. Simulated devices on this machine",
        "(`mdm sim ios`) work; real iPhones and iPads do not. To set a name devices can reach:",
        "  - on a new data directory: mdm init --hostname mdm.example.com",
        "    (or MDM_HOSTNAME=mdm.example.com mdm init)",
        f"  - once initialised: set hostname = \"mdm.example.com\" in {data_dir / 'mdm.toml'},",
        "    run `mdm init --reissue-certs` (new server certificates; the CA and tokens stay),",
        "    then restart the server (`mdm reload` does not apply the host name)",
        "=" * 78,
    ]
