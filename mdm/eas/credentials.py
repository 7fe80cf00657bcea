"""The service account's Kerberos credentials for the Exchange runner.

Either a keytab holding the principal's key or a password file (mode 0600, read once at start,
never logged) gets the account's initial ticket (TGT) from the KDC. The ticket lives in a private
FILE credential cache ``DATA_DIR/eas/krb5cc`` (directory 0700, file 0600), written to a temporary
name and renamed into place, so a reader never sees half a cache. pypsrp/pyspnego are handed
``spnego.KerberosCCache(ccache="FILE:...", principal=...)`` as the WSMan "username": the GSSAPI
context is built from that cache, and the service tickets it obtains (HTTP/<cas>) are stored in
it too, so a reconnect while the KDC is briefly down still works as long as the tickets are valid.

No environment variable is read or set here (not KRB5CCNAME, not KRB5_CLIENT_KTNAME): the cache
is named explicitly, so several runners in one process (tests under xdist, or a test next to the
service) never share or overwrite each other's tickets. Only ``KRB5_CONFIG`` (which realm, which
KDC) is taken from the process, as every Kerberos library does.

The ticket is renewed (a fresh one is obtained) once less than ``renew_margin`` of its life is
left; if the KDC cannot be reached then but the current ticket is still valid, it is kept and
the next call tries again.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import krb5
import spnego

from mdm.eas.config import EasConfig
from mdm.eas.errors import ExchangeAuthError

log = logging.getLogger(__name__)

# MIT krb5 error codes (krb5/krb5.h, kdb/kdc errors) worth a sentence of their own.
_EXPLAIN = {
    -1765328360: "wrong password or key (pre-authentication failed)",
    -1765328353: "wrong password or key (the KDC's answer does not decrypt with it)",
    -1765328378: "the principal is not in the Kerberos database",
    -1765328228: "cannot reach any KDC of the realm (KDC down or unreachable)",
    -1765328203: "the keytab has no key for this principal",
    -1765328242: "the clock is too far from the KDC's",
    -1765328366: "the principal's key has expired",
    -1765328361: "the principal's password has expired",
}
DEFAULT_RENEW_MARGIN = 0.25  # renew once less than a quarter of the ticket's life is left


@dataclass(frozen=True, slots=True)
class TicketInfo:
    principal: str
    obtained_at: float
    expires_at: float


def _read_password(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ExchangeAuthError(
                f"[eas] password_file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                "chmod 600 it")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExchangeAuthError(f"[eas] password_file {path}: {exc.strerror}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise ExchangeAuthError(f"[eas] password_file {path} is empty")
    return password


class KerberosLogin:
    """Obtains and renews the service account's TGT into a private ccache. Thread-safe: the
    runner's worker threads call ``credential()`` before each connection attempt."""

    def __init__(self, *, principal: str, cache_dir: Path, keytab: Path | None = None,
                 password_file: Path | None = None,
                 renew_margin: float = DEFAULT_RENEW_MARGIN) -> None:
        if (keytab is None) == (password_file is None):
            raise ValueError("exactly one of keytab and password_file")
        if "@" not in principal:
            raise ExchangeAuthError(f"[eas] principal {principal!r} is not user@REALM")
        self.principal = principal
        self.keytab = keytab
        self._password = _read_password(password_file) if password_file is not None else None
        if keytab is not None and not keytab.is_file():
            raise ExchangeAuthError(f"[eas] keytab_file {keytab} does not exist")
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(cache_dir, 0o700)
        self.cache_path = cache_dir / "krb5cc"
        self.renew_margin = renew_margin
        self._lock = threading.Lock()
        self._ticket: TicketInfo | None = None

    @classmethod
    def from_config(cls, config: EasConfig, data_dir: Path) -> KerberosLogin:
        return cls(
            principal=config.principal, cache_dir=data_dir / "eas",
            keytab=Path(config.keytab_file) if config.keytab_file else None,
            password_file=Path(config.password_file) if config.password_file else None,
        )

    def __repr__(self) -> str:  # never the password
        how = f"keytab={self.keytab}" if self.keytab else "password_file"
        return f"KerberosLogin({self.principal}, {how}, cache={self.cache_path})"

    @property
    def ticket(self) -> TicketInfo | None:
        return self._ticket

    def credential(self) -> spnego.KerberosCCache:
        """The credential to authenticate with: the private ccache, with a ticket that is not
        about to expire. Raises ``ExchangeAuthError`` when no valid ticket can be had."""
        with self._lock:
            ticket = self._ticket
            now = time.time()
            if ticket is None or now >= self._renew_at(ticket):
                try:
                    self._ticket = self._kinit()
                except ExchangeAuthError:
                    if ticket is None or now >= ticket.expires_at - 30:
                        raise
                    log.warning("eas: could not renew the Kerberos ticket of %s; the current one "
                                "is valid until %s", self.principal, time.ctime(ticket.expires_at))
        return spnego.KerberosCCache(ccache=f"FILE:{self.cache_path}", principal=self.principal)

    def invalidate(self) -> None:
        """Forget the ticket (the server refused it): the next ``credential()`` gets a new one."""
        with self._lock:
            self._ticket = None

    def _renew_at(self, ticket: TicketInfo) -> float:
        life = max(0.0, ticket.expires_at - ticket.obtained_at)
        return ticket.expires_at - life * self.renew_margin

    def _kinit(self) -> TicketInfo:
        ctx = krb5.init_context()
        tmp = self.cache_path.with_name(f".krb5cc.{uuid.uuid4().hex}")
        try:
            princ = krb5.parse_name_flags(ctx, self.principal.encode())
            opt = krb5.get_init_creds_opt_alloc(ctx)
            if self.keytab is not None:
                kt = krb5.kt_resolve(ctx, f"FILE:{self.keytab}".encode())
                creds = krb5.get_init_creds_keytab(ctx, princ, opt, keytab=kt)
            else:
                assert self._password is not None
                creds = krb5.get_init_creds_password(ctx, princ, opt,
                                                     password=self._password.encode())
            ccache = krb5.cc_resolve(ctx, f"FILE:{tmp}".encode())
            krb5.cc_initialize(ctx, ccache, creds.client)
            krb5.cc_store_cred(ctx, ccache, creds)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.cache_path)
        except krb5.Krb5Error as exc:
            raise ExchangeAuthError(self._explain(exc)) from None
        finally:
            tmp.unlink(missing_ok=True)
        ticket = TicketInfo(self.principal, time.time(), float(creds.times.endtime))
        log.info("eas: Kerberos ticket for %s obtained (%s), valid until %s", self.principal,
                 "keytab" if self.keytab else "password", time.ctime(ticket.expires_at))
        return ticket

    def _explain(self, exc: krb5.Krb5Error) -> str:
        what = _EXPLAIN.get(exc.err_code)
        detail = str(exc).strip()
        text = f"Kerberos: no ticket for {self.principal}: {what or detail}"
        if what and detail:
            text += f" ({detail})"
        if exc.err_code == -1765328203 and self.keytab is not None:
            text += f"; keytab {self.keytab}"
        return text
