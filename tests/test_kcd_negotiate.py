"""The Negotiate acceptor against the real MIT KDC of the tests: a valid ticket, the mutual token,
and each typed refusal (another service, replay, expiry, garbage), and the keytab check."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
from engines import ENGINE_FREE
from kcd_support import initiate, login, service, verify_mutual

from mdm.config import ConfigError, KerberosConfig
from mdm.server.negotiate import Acceptor, NegotiateRefused, PrincipalMap, load, parse_header
from tests.kdc import Kdc, kdc_fixture, krb5_ccache_fixture  # noqa: F401  (fixtures)

pytestmark = ENGINE_FREE


@pytest.fixture(scope="module")
def acceptor(kdc: Kdc) -> Acceptor:
    return Acceptor(kdc.service_keytab, kdc.service_principal)


def _refused(acceptor: Acceptor, header: str) -> NegotiateRefused:
    with pytest.raises(NegotiateRefused) as caught:
        acceptor.accept_sync(header)
    return caught.value


def test_valid_ticket_and_mutual_token(kdc: Kdc, krb5_ccache: Path, acceptor: Acceptor) -> None:
    login(kdc, "alice", krb5_ccache)
    context, header = initiate(kdc.service_principal)
    accepted = acceptor.accept_sync(header)
    assert accepted.principal == f"alice@{kdc.realm}"
    verify_mutual(context, accepted.www_authenticate)


def test_the_credential_is_acquired_once_per_keytab_version(
    kdc: Kdc, krb5_ccache: Path, acceptor: Acceptor
) -> None:
    login(kdc, "alice", krb5_ccache)
    first = acceptor._credentials()
    for _ in range(2):
        _, header = initiate(kdc.service_principal)
        assert acceptor.accept_sync(header).principal == f"alice@{kdc.realm}"
    assert acceptor._credentials() is first  # not acquired again per request
    os.utime(acceptor.keytab)  # a rotated keytab: acquired anew, and tickets still accepted
    _, header = initiate(kdc.service_principal)
    assert acceptor.accept_sync(header).principal == f"alice@{kdc.realm}"
    assert acceptor._credentials() is not first


def test_same_token_twice_is_a_replay(kdc: Kdc, krb5_ccache: Path, acceptor: Acceptor) -> None:
    login(kdc, "alice", krb5_ccache)
    _, header = initiate(kdc.service_principal)
    acceptor.accept_sync(header)
    assert _refused(acceptor, header).reason == "replay"


def test_ticket_for_another_service(kdc: Kdc, krb5_ccache: Path, acceptor: Acceptor) -> None:
    login(kdc, "alice", krb5_ccache)
    _, header = initiate(service(kdc, "HTTP/otherhost"))
    assert _refused(acceptor, header).reason == "wrong_service"
    # host/localhost is in the same keytab, but the acceptor is named HTTP/localhost.
    _, header = initiate(f"host/localhost@{kdc.realm}")
    assert _refused(acceptor, header).reason == "wrong_service"


def test_malformed_and_truncated_tokens(kdc: Kdc, krb5_ccache: Path, acceptor: Acceptor) -> None:
    login(kdc, "alice", krb5_ccache)
    _, header = initiate(kdc.service_principal)
    token = base64.b64decode(header.split()[1])
    for bad in (
        "Negotiate !!!not-base64!!!",
        "Basic dXNlcjpwYXNz",
        "Negotiate",
        "Negotiate " + base64.b64encode(b"short").decode(),
        "Negotiate " + base64.b64encode(token[: len(token) // 2]).decode(),
        "Negotiate " + base64.b64encode(b"\x60" + os.urandom(200)).decode(),
        "Negotiate " + "A" * 70_000,
    ):
        assert _refused(acceptor, bad).reason == "malformed", bad[:40]


def test_expired_ticket(kdc: Kdc, krb5_ccache: Path, acceptor: Acceptor, tmp_path: Path) -> None:
    """A one-second ticket, accepted under a zero clock skew once its end has passed (MIT checks
    the ticket's end before the authenticator's age)."""
    login(kdc, "alice", krb5_ccache, lifetime="1s")
    started = time.time()
    _, header = initiate(kdc.service_principal)
    strict = tmp_path / "krb5-strict.conf"
    strict.write_text(kdc.krb5_conf.read_text().replace("[libdefaults]", "[libdefaults]\n clockskew = 0", 1))
    old = os.environ["KRB5_CONFIG"]
    os.environ["KRB5_CONFIG"] = str(strict)
    try:
        while time.time() < int(started) + 2.05:  # the ticket's end (whole seconds) has passed
            time.sleep(0.1)
        assert _refused(acceptor, header).reason == "expired"
    finally:
        os.environ["KRB5_CONFIG"] = old


def test_keytab_without_the_principal_is_a_config_error(kdc: Kdc) -> None:
    with pytest.raises(ConfigError) as caught:
        Acceptor(kdc.svc_keytab, kdc.service_principal)
    assert str(kdc.svc_keytab) in str(caught.value) and kdc.service_principal in str(caught.value)
    with pytest.raises(ConfigError, match="does not exist"):
        Acceptor(kdc.tmpdir / "missing.keytab", kdc.service_principal)
    with pytest.raises(ConfigError, match=r"kerberos\.keytab"):
        load(KerberosConfig(), "localhost", Path)


def test_default_service_principal_from_hostname(kdc: Kdc) -> None:
    kerberos = load(KerberosConfig(keytab=str(kdc.service_keytab), realms=[kdc.realm]), "localhost", Path)
    assert kerberos.acceptor.service_principal == "HTTP/localhost"


def test_principal_map() -> None:
    users = PrincipalMap(["CORP.EXAMPLE.COM"], {"svc-alice@OTHER.ORG": "alice"})
    assert users.user_name("alice@corp.example.com") == "alice"
    assert users.user_name("svc-alice@OTHER.ORG") == "alice"
    assert users.user_name("bob@OTHER.ORG") is None
    assert users.user_name("HTTP/host@CORP.EXAMPLE.COM") is None
    assert users.user_name("alice") is None
    with pytest.raises(NegotiateRefused):
        parse_header("Negotiate " + "A" * 70_000)
