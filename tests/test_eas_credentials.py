"""The runner's Kerberos login against a real MIT KDC (tests/kdc.py): keytab and password, the
private ccache, renewal, and the clear errors of a wrong password, a keytab without the
principal, an unknown principal and a KDC that is down."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import krb5
import pytest

from mdm.eas.credentials import KerberosLogin
from mdm.eas.errors import ExchangeAuthError
from tests.engines import ENGINE_FREE
from tests.kdc import Kdc, kdc_fixture  # noqa: F401  (the "kdc" fixture)

pytestmark = ENGINE_FREE


def _password_file(tmp_path: Path, password: str, mode: int = 0o600) -> Path:
    path = tmp_path / "eas.password"
    path.write_text(password + "\n", encoding="utf-8")
    os.chmod(path, mode)
    return path


def _ccache_principal(path: Path) -> str:
    ctx = krb5.init_context()
    cc = krb5.cc_resolve(ctx, f"FILE:{path}".encode())
    return krb5.cc_get_principal(ctx, cc).name.decode()  # type: ignore[union-attr]


def test_a_keytab_gets_a_ticket_into_a_private_ccache(kdc: Kdc, tmp_path: Path) -> None:
    login = KerberosLogin(principal=kdc.svc_principal, keytab=kdc.svc_keytab,
                          cache_dir=tmp_path / "eas")
    cred = login.credential()
    assert cred.ccache == f"FILE:{tmp_path / 'eas' / 'krb5cc'}"
    assert cred.principal == kdc.svc_principal
    assert stat.S_IMODE(login.cache_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "eas").stat().st_mode) == 0o700
    assert _ccache_principal(login.cache_path) == kdc.svc_principal
    assert login.ticket is not None and login.ticket.expires_at > login.ticket.obtained_at
    # The process's own ccache was not touched.
    assert os.environ["KRB5CCNAME"] != cred.ccache


def test_a_password_file_gets_a_ticket(kdc: Kdc, tmp_path: Path) -> None:
    login = KerberosLogin(principal=kdc.svc_principal, cache_dir=tmp_path / "eas",
                          password_file=_password_file(tmp_path, kdc.svc_password))
    login.credential()
    assert _ccache_principal(login.cache_path) == kdc.svc_principal
    assert kdc.svc_password not in repr(login)


def test_a_wrong_password_is_a_clear_error_without_the_password(kdc: Kdc, tmp_path: Path) -> None:
    wrong = "not-" + kdc.svc_password
    login = KerberosLogin(principal=kdc.svc_principal, cache_dir=tmp_path / "eas",
                          password_file=_password_file(tmp_path, wrong))
    with pytest.raises(ExchangeAuthError) as info:
        login.credential()
    assert kdc.svc_principal in str(info.value)
    assert "wrong password" in str(info.value)
    assert wrong not in str(info.value)
    assert not login.cache_path.exists()


def test_a_keytab_without_the_principal(kdc: Kdc, tmp_path: Path) -> None:
    login = KerberosLogin(principal=kdc.svc_principal, keytab=kdc.service_keytab,
                          cache_dir=tmp_path / "eas")
    with pytest.raises(ExchangeAuthError, match="keytab has no key for this principal"):
        login.credential()


def test_the_kdc_down_on_a_fresh_login(kdc: Kdc, tmp_path: Path) -> None:
    login = KerberosLogin(principal=kdc.svc_principal, keytab=kdc.svc_keytab,
                          cache_dir=tmp_path / "eas")
    kdc.stop_kdc()
    try:
        with pytest.raises(ExchangeAuthError, match="cannot reach any KDC"):
            login.credential()
    finally:
        kdc.start_kdc()


def test_renewal_gets_a_new_ticket_and_keeps_the_old_one_while_the_kdc_is_down(
        kdc: Kdc, tmp_path: Path) -> None:
    # renew_margin 1.0: every call is "due for renewal".
    login = KerberosLogin(principal=kdc.svc_principal, keytab=kdc.svc_keytab,
                          cache_dir=tmp_path / "eas", renew_margin=1.0)
    login.credential()
    first = login.ticket
    login.credential()
    assert login.ticket is not None and first is not None
    assert login.ticket.obtained_at > first.obtained_at  # a new kinit
    second = login.ticket
    kdc.stop_kdc()
    try:
        login.credential()  # renewal fails, the valid ticket is kept
        assert login.ticket is second
        login.invalidate()
        with pytest.raises(ExchangeAuthError):
            login.credential()
    finally:
        kdc.start_kdc()


def test_a_password_file_readable_by_others_is_refused(kdc: Kdc, tmp_path: Path) -> None:
    with pytest.raises(ExchangeAuthError, match="chmod 600"):
        KerberosLogin(principal=kdc.svc_principal, cache_dir=tmp_path / "eas",
                      password_file=_password_file(tmp_path, kdc.svc_password, 0o644))


def test_missing_files_and_bad_principals_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ExchangeAuthError, match="does not exist"):
        KerberosLogin(principal="a@B", keytab=tmp_path / "none.keytab", cache_dir=tmp_path)
    with pytest.raises(ExchangeAuthError, match="password_file"):
        KerberosLogin(principal="a@B", password_file=tmp_path / "none", cache_dir=tmp_path)
    with pytest.raises(ExchangeAuthError, match="user@REALM"):
        KerberosLogin(principal="nobody", keytab=tmp_path / "x", cache_dir=tmp_path)
