"""A service account's Kerberos login into a private credential cache (the EAS runner, the AD CS
connector).

Either a keytab holding the principal's key or a password file (mode 0600, read once at start,
never logged) gets the account's initial ticket (TGT) from the KDC. The ticket lives in a private
FILE credential cache ``<cache_dir>/krb5cc`` (directory 0700, file 0600), written to a temporary
name and renamed into place, so a reader never sees half a cache. pyspnego is handed
``spnego.KerberosCCache(ccache="FILE:...", principal=...)`` as the "username": the GSSAPI
context is built from that cache, and the service tickets it obtains (HTTP/<host>) are stored in
it too, so a reconnect while the KDC is briefly down still works as long as the tickets are valid.

No environment variable is read or set here (not KRB5CCNAME, not KRB5_CLIENT_KTNAME): the cache
is named explicitly, so several logins in one process never share or overwrite each other's
tickets. Only ``KRB5_CONFIG`` (which realm, which KDC) is taken from the process, as every
Kerberos library does.

The ticket is renewed (a fresh one is obtained) once less than ``renew_margin`` of its life is
left; if the KDC cannot be reached then but the current ticket is still valid, it is kept and
the next call tries again.

The Kerberos libraries (``krb5``, ``pyspnego``) are the optional ``eas`` extra: they are imported
when a login is made, never when this module is.
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import spnego

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
_NO_KEY_IN_KEYTAB = -1765328203
DEFAULT_RENEW_MARGIN = 0.25  # renew once less than a quarter of the ticket's life is left


class KerberosLoginError(Exception):
    """No valid ticket could be had (the message says why; never a password)."""


@dataclass(frozen=True, slots=True)
class TicketInfo:
    principal: str
    obtained_at: float
    expires_at: float


def read_password_file(path: Path, label: str, error: type[Exception] = KerberosLoginError) -> str:
    """A password kept in a file of its own: mode 0600 (refused if group or others may read it),
    one line, not empty. Raises ``error`` with a message naming the file, never its content."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise error(f"[{label}] password_file {path} is readable by others "
                        f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"[{label}] password_file {path}: {exc.strerror}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise error(f"[{label}] password_file {path} is empty")
    return password


class KerberosLogin:
    """Obtains and renews a service account's TGT into a private ccache. Thread-safe.

    ``label`` prefixes messages (``[eas]``); a feature may subclass and set ``error`` to raise
    its own exception type (it is called with the message)."""

    error: type[Exception] = KerberosLoginError

    def __init__(self, *, principal: str, cache_dir: Path, keytab: Path | None = None,
                 password_file: Path | None = None, label: str = "kerberos",
                 renew_margin: float = DEFAULT_RENEW_MARGIN) -> None:
        if (keytab is None) == (password_file is None):
            raise ValueError("exactly one of keytab and password_file")
        self.label = label
        if "@" not in principal:
            raise self.error(f"[{label}] principal {principal!r} is not user@REALM")
        self.principal = principal
        self.keytab = keytab
        self._password = self._read_password(password_file) if password_file is not None else None
        if keytab is not None and not keytab.is_file():
            raise self.error(f"[{label}] keytab_file {keytab} does not exist")
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(cache_dir, 0o700)
        self.cache_path = cache_dir / "krb5cc"
        self.renew_margin = renew_margin
        self._lock = threading.Lock()
        self._ticket: TicketInfo | None = None

    def __repr__(self) -> str:  # never the password
        how = f"keytab={self.keytab}" if self.keytab else "password_file"
        return f"{type(self).__name__}({self.principal}, {how}, cache={self.cache_path})"

    def _read_password(self, path: Path) -> str:
        return read_password_file(path, self.label, self.error)

    @property
    def ticket(self) -> TicketInfo | None:
        return self._ticket

    def credential(self) -> spnego.KerberosCCache:
        """The credential to authenticate with: the private ccache, with a ticket that is not
        about to expire. Raises ``self.error`` when no valid ticket can be had."""
        import spnego

        with self._lock:
            ticket = self._ticket
            now = time.time()
            if ticket is None or now >= self._renew_at(ticket):
                try:
                    self._ticket = self._kinit()
                except self.error:
                    if ticket is None or now >= ticket.expires_at - 30:
                        raise
                    log.warning("%s: could not renew the Kerberos ticket of %s; the current one "
                                "is valid until %s", self.label, self.principal,
                                time.ctime(ticket.expires_at))
        return spnego.KerberosCCache(ccache=f"FILE:{self.cache_path}", principal=self.principal)

    def invalidate(self) -> None:
        """Forget the ticket (the server refused it): the next ``credential()`` gets a new one."""
        with self._lock:
            self._ticket = None

    def _renew_at(self, ticket: TicketInfo) -> float:
        life = max(0.0, ticket.expires_at - ticket.obtained_at)
        return ticket.expires_at - life * self.renew_margin

    def _kinit(self) -> TicketInfo:
        import krb5

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
            raise self.error(self._explain(exc)) from None
        finally:
            tmp.unlink(missing_ok=True)
        ticket = TicketInfo(self.principal, time.time(), float(creds.times.endtime))
        log.info("%s: Kerberos ticket for %s obtained (%s), valid until %s", self.label,
                 self.principal, "keytab" if self.keytab else "password", time.ctime(ticket.expires_at))
        return ticket

    def _explain(self, exc: Any) -> str:
        what = _EXPLAIN.get(exc.err_code)
        detail = str(exc).strip()
        text = f"Kerberos: no ticket for {self.principal}: {what or detail}"
        if what and detail:
            text += f" ({detail})"
        if exc.err_code == _NO_KEY_IN_KEYTAB and self.keytab is not None:
            text += f"; keytab {self.keytab}"
        return text
