"""A real MIT KDC for the EAS tests (k5test), one realm per test session (so one per xdist worker).

Use it from a test module by importing the fixtures::

    from tests.kdc import Kdc, kdc_fixture, krb5_ccache_fixture  # noqa: F401  (fixtures)

and ask for ``kdc`` / ``krb5_ccache`` in the tests (the fixtures' names).

``kdc`` (session): the realm, its krb5.conf (``KRB5_CONFIG`` is set in this process for the
session and restored afterwards: gssapi reads it), the service principal
``HTTP/localhost@REALM`` with its keytab (the tests use ``localhost`` in URLs; pypsrp builds the
SPN ``HTTP@localhost`` from the URL host and krb5.conf turns off hostname canonicalisation so
client and server agree), the service account ``exchange-svc@REALM`` (password and a client
keytab), a user ``nobody@REALM`` that Exchange grants nothing, and ``stop_kdc()`` /
``start_kdc()``.

``krb5_ccache`` (function): ``KRB5CCNAME`` pointed at a fresh FILE ccache of the test, so tests
never see each other's tickets.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import k5test
import pytest

from tests.ports import _slice

SERVICE_HOST = "localhost"
_ENV_KEYS = ("KRB5_CONFIG", "KRB5CCNAME", "KRB5RCACHEDIR", "KRB5_KTNAME", "KRB5_CLIENT_KTNAME",
             "KRB5_TRACE")


def _free_kdc_port() -> int:
    """A port free for both TCP and UDP below the ephemeral range, in this worker's slice."""
    candidates = list(_slice())
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


def start_realm(realm: str = "CORP.EXAMPLE.COM") -> Kdc:
    """Create and start a realm (the caller stops it with ``stop_realm``)."""
    port = _free_kdc_port()
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


def _set_env(values: dict[str, str | None]) -> dict[str, str | None]:
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    return old


@pytest.fixture(scope="session", name="kdc")
def kdc_fixture() -> Iterator[Kdc]:
    realm = start_realm()
    old = _set_env({
        "KRB5_CONFIG": str(realm.krb5_conf),
        "KRB5RCACHEDIR": str(realm.tmpdir),
        # Nothing from the developer's environment: no default keytab or ccache of theirs.
        "KRB5_KTNAME": f"FILE:{realm.tmpdir / 'no-default.keytab'}",
        "KRB5_CLIENT_KTNAME": f"FILE:{realm.tmpdir / 'no-default-client.keytab'}",
        "KRB5CCNAME": f"FILE:{realm.tmpdir / 'session.ccache'}",
    })
    try:
        yield realm
    finally:
        stop_realm(realm)
        _set_env(old)


@pytest.fixture(name="krb5_ccache")
def krb5_ccache_fixture(kdc: Kdc, tmp_path: Path) -> Iterator[Path]:
    """This test's own credential cache (empty at start); the KDC is running at start."""
    kdc.start_kdc()
    path = tmp_path / "krb5cc"
    old = _set_env({"KRB5CCNAME": f"FILE:{path}"})
    try:
        yield path
    finally:
        _set_env(old)
        kdc.start_kdc()

