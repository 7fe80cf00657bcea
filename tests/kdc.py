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
from collections.abc import Iterator
from pathlib import Path

import pytest

from mdm.devfakes.kdc import SERVICE_HOST, Kdc, stop_realm
from mdm.devfakes.kdc import start_realm as _start_realm
from tests.ports import worker_slice

__all__ = ["SERVICE_HOST", "Kdc", "kdc_fixture", "krb5_ccache_fixture", "start_realm", "stop_realm"]


def start_realm(realm: str = "CORP.EXAMPLE.COM") -> Kdc:
    """A realm on ports of this xdist worker's slice (``mdm.devfakes.kdc.start_realm``)."""
    return _start_realm(realm, ports=worker_slice())


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

