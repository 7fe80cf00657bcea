"""A real MIT Kerberos realm for development and tests (k5test over Debian's krb5-kdc): the
KDC the EAS contract fake and the EAS runner authenticate against, in ``tests/kdc.py`` (one realm
per test session) and in ``mdm bench eas --runner psrp``. Not a fake: k5test creates a realm
database and starts the real ``krb5kdc``.

The realm holds the service principal ``HTTP/localhost`` (and ``host/localhost``) with a keytab,
the service account ``exchange-svc`` (password and client keytab) and ``nobody`` (a password, no
rights in Exchange).
"""

from __future__ import annotations

import random
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import k5test

SERVICE_HOST = "localhost"


def _free_kdc_port(ports: Iterable[int] | None = None) -> int:
    """A port free for both TCP and UDP below the ephemeral range (from ``ports`` if given: the
    tests give each xdist worker a slice of its own)."""
    candidates = list(ports if ports is not None else range(20_000, 30_000))
    random.shuffle(candidates)
    for port in candidates[:400]:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port for the KDC")


@dataclass
class Kdc:
    """A running test realm. Passwords are random per session."""

    k5: k5test.K5Realm
    realm: str
    krb5_conf: Path
    kdc_port: int
    host: str
    service_principal: str       # HTTP/localhost@REALM
    service_keytab: Path         # HTTP/localhost and host/localhost
    svc_principal: str           # exchange-svc@REALM
    svc_password: str
    svc_keytab: Path             # client keytab of exchange-svc
    nobody_principal: str        # nobody@REALM
    nobody_password: str
    tmpdir: Path
    _running: bool = field(default=True)

    @property
    def running(self) -> bool:
        return self._running

    def stop_kdc(self) -> None:
        """The KDC goes down: no new tickets (AS and TGS requests time out / are refused)."""
        if self._running:
            self.k5.stop_kdc()
            self._running = False

    def start_kdc(self) -> None:
        if not self._running:
            self.k5.start_kdc()
            self._running = True

    def add_user(self, name: str, password: str | None = None) -> tuple[str, str]:
        """Another principal (``name@REALM``) with a password; returns (principal, password)."""
        password = password or secrets.token_urlsafe(12)
        principal = f"{name}@{self.realm}"
        self.k5.addprinc(principal, password)
        return principal, password

    def kinit(self, principal: str, password: str, ccache: Path) -> None:
        """Get a TGT into ``ccache`` with the realm's kinit."""
        self.k5.kinit(principal, password, flags=["-c", str(ccache)], verbose=False)


def start_realm(realm: str = "CORP.EXAMPLE.COM", ports: Iterable[int] | None = None) -> Kdc:
    """Create and start a realm (the caller stops it with ``stop_realm``)."""
    port = _free_kdc_port(ports)
    krb5_conf = {
        "libdefaults": {
            "default_realm": "$realm",
            "dns_lookup_kdc": "false",
            "dns_lookup_realm": "false",
            "dns_canonicalize_hostname": "false",
            "rdns": "false",
            "udp_preference_limit": "1",  # TCP: a stopped KDC is refused at once, not timed out
            "kdc_timeout": "2s",
            "max_retries": "1",
            "ignore_acceptor_hostname": "true",
        },
        "realms": {"$realm": {"kdc": "127.0.0.1:$port0", "admin_server": "127.0.0.1:$port1",
                              "kpasswd_server": "127.0.0.1:$port2"}},
        "domain_realm": {SERVICE_HOST: "$realm", "127.0.0.1": "$realm"},
    }
    k5 = k5test.K5Realm(realm=realm, portbase=port, krb5_conf=krb5_conf, create_user=False,
                        create_host=False, get_creds=False, start_kdc=True)
    tmp = Path(k5.tmpdir)
    service = f"HTTP/{SERVICE_HOST}@{realm}"
    service_keytab = tmp / "http.keytab"
    # host/ too: Active Directory maps host/ SPNs to HTTP/, and pypsrp asks for host/<name>
    # unless the client passes negotiate_service="HTTP"; both keys serve the same endpoint.
    for principal in (service, f"host/{SERVICE_HOST}@{realm}"):
        k5.addprinc(principal)
        k5.extract_keytab(principal, str(service_keytab))
    svc, svc_password = f"exchange-svc@{realm}", secrets.token_urlsafe(12)
    k5.addprinc(svc, svc_password)
    svc_keytab = tmp / "exchange-svc.keytab"
    k5.extract_keytab(svc, str(svc_keytab))
    nobody, nobody_password = f"nobody@{realm}", secrets.token_urlsafe(12)
    k5.addprinc(nobody, nobody_password)
    return Kdc(k5=k5, realm=realm, krb5_conf=tmp / "krb5.conf", kdc_port=port, host=SERVICE_HOST,
               service_principal=service, service_keytab=service_keytab, svc_principal=svc,
               svc_password=svc_password, svc_keytab=svc_keytab, nobody_principal=nobody,
               nobody_password=nobody_password, tmpdir=tmp)


def stop_realm(kdc: Kdc) -> None:
    kdc.k5.stop()  # stops the KDC and removes the realm's directory


