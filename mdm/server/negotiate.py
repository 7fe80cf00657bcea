"""``Authorization: Negotiate`` from a publishing proxy (Kerberos Constrained Delegation, issue 16):
the SPNEGO/Kerberos acceptor of the listeners with ``kcd = true``.

The proxy (TMG, WAP) terminates the devices' TLS and obtains, by constrained delegation, a service
ticket for ``HTTP/<our host>`` in the user's name; we accept it with the key in ``[kerberos]
keytab`` (passed through the gssapi credential store: no process-wide ``KRB5_KTNAME``), learn the
client principal and answer the AP-REP (``WWW-Authenticate: Negotiate <token>``, mutual
authentication). MIT's replay cache refuses an authenticator seen before.

gssapi is the optional ``eas`` extra: imported when a listener switches ``kcd`` on, with a clear
``ConfigError`` when missing. Its calls block (keytab and replay-cache files): they run in a thread.
Who may send Negotiate at all (the trusted proxies) is the listeners' business, not this module's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mdm.config import ConfigError, KerberosConfig

log = logging.getLogger("mdm.server.negotiate")

SCHEME = "Negotiate"
# An AP-REQ with a PAC is a few kB; Windows caps the header at 64 kB (MaxFieldLength/MaxTokenSize).
MAX_HEADER = 64 * 1024

Reason = Literal["malformed", "wrong_service", "expired", "replay", "clock_skew", "no_key", "failed"]

# The mechanism glue renumbers minor status codes per process (and SPNEGO wraps Kerberos), so the
# reason is read from MIT's com_err messages (krb5/krb5_err.et, stable across releases).
_MESSAGES: tuple[tuple[str, Reason], ...] = (
    ("malformed or corrupt", "malformed"),  # a token header gssapi cannot read
    ("ticket expired", "expired"),  # KRB5KRB_AP_ERR_TKT_EXPIRED
    ("ticket not yet valid", "clock_skew"),  # KRB5KRB_AP_ERR_TKT_NYV
    ("clock skew too great", "clock_skew"),  # KRB5KRB_AP_ERR_SKEW
    ("request is a replay", "replay"),  # KRB5KRB_AP_ERR_REPEAT, KRB5_RC_REPLAY
    ("wrong principal in request", "wrong_service"),  # KRB5KRB_AP_WRONG_PRINC
    ("the ticket isn't for us", "wrong_service"),  # KRB5KRB_AP_ERR_NOT_US
    ("no key table entry found", "wrong_service"),  # KRB5_KT_NOTFOUND: not our principal
    ("key version number", "no_key"),  # KRB5_KT_KVNONOTFOUND, KRB5KRB_AP_ERR_BADKEYVER
    ("cannot find key of appropriate type", "no_key"),  # KRB5_KT_NOTFOUND for the enctype
    ("service key not available", "no_key"),  # KRB5KRB_AP_ERR_NOKEY
    ("decrypt integrity check failed", "no_key"),  # KRB5KRB_AP_ERR_BAD_INTEGRITY: another key
)

_UNDECRYPTABLE = re.compile(
    r"cannot decrypt ticket for (?P<ticket>\S+) using keytab key for (?P<ours>\S+)", re.IGNORECASE
)


class NegotiateRefused(Exception):
    """A Negotiate header that does not authenticate; ``reason`` is one of ``Reason``."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Accepted:
    principal: str  # the client principal, user@REALM
    mutual_token: bytes | None  # the AP-REP, for WWW-Authenticate

    @property
    def www_authenticate(self) -> str:
        if not self.mutual_token:
            return SCHEME
        return f"{SCHEME} {base64.b64encode(self.mutual_token).decode()}"


def parse_header(header: str) -> bytes:
    """The token of ``Negotiate <base64>`` (``NegotiateRefused("malformed")`` otherwise)."""
    if len(header) > MAX_HEADER:
        raise NegotiateRefused("malformed", "the Negotiate header is too long")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != SCHEME.lower() or not value.strip():
        raise NegotiateRefused("malformed", "the Authorization header is not 'Negotiate <token>'")
    try:
        token = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise NegotiateRefused("malformed", "the Negotiate token is not base64") from None
    if len(token) < 16:
        raise NegotiateRefused("malformed", "the Negotiate token is truncated")
    return token


def _gssapi() -> Any:
    try:
        import gssapi
    except ImportError as exc:  # the optional "eas" extra is not installed
        raise ConfigError(
            f"a listener with kcd = true needs the Kerberos libraries ({exc.name or exc}): "
            "pip install 'mdm[eas]' (they build against MIT Kerberos: Debian's libkrb5-dev)"
        ) from None
    return gssapi


class Acceptor:
    """Accepts SPNEGO/Kerberos tokens for one service principal from one keytab."""

    def __init__(self, keytab: Path, service_principal: str) -> None:
        self._gssapi = _gssapi()
        self.keytab = keytab
        self.service_principal = service_principal
        self._store = {"keytab": f"FILE:{keytab}"}
        self._name = self._gssapi.Name(service_principal, self._gssapi.NameType.kerberos_principal)
        self._cached: tuple[int, Any] | None = None
        self._check()

    def _check(self) -> None:
        """A keytab that cannot be read or lacks the principal is a configuration error that
        names both (found at start-up, not at the first device)."""
        if not self.keytab.is_file():
            raise ConfigError(f"kerberos.keytab: {self.keytab} does not exist")
        try:
            self._credentials().inquire()
        except self._gssapi.exceptions.GSSError as exc:
            raise ConfigError(
                f"kerberos.keytab: {self.keytab} holds no key of kerberos.service_principal "
                f"{self.service_principal!r} ({_describe(exc)})"
            ) from None

    def _credentials(self) -> Any:
        """The acceptor credential, acquired once per keytab version (MIT's credential handle is
        locked internally, so contexts on several threads share it); a rotated keytab (new
        mtime) is picked up by the next request."""
        try:
            version = self.keytab.stat().st_mtime_ns
        except OSError:
            version = -1
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        credentials = self._gssapi.Credentials(name=self._name, usage="accept", store=self._store)
        self._cached = (version, credentials)
        return credentials

    def accept_sync(self, header: str) -> Accepted:
        token = parse_header(header)
        g = self._gssapi
        try:
            context = g.SecurityContext(creds=self._credentials(), usage="accept")
            out = context.step(token)
            # SPNEGO answers a refusal with a reject token; the error is raised here.
            complete = context.complete
            principal = str(context.initiator_name) if complete else ""
        except g.exceptions.GSSError as exc:
            raise _refused(g, exc) from None
        except (ValueError, TypeError, OverflowError):
            raise NegotiateRefused("malformed", "the Negotiate token cannot be read") from None
        if not complete:
            # Kerberos is one leg; a mechanism that needs another (NTLM through SPNEGO) is not
            # what constrained delegation sends.
            raise NegotiateRefused("failed", "the Negotiate exchange needs more than one leg")
        return Accepted(principal, out or None)

    async def accept(self, header: str) -> Accepted:
        return await asyncio.to_thread(self.accept_sync, header)


def _describe(exc: Any) -> str:
    try:
        return str(exc.gen_message()).replace("\n", " ")
    except Exception:  # the message of a failed call must not hide the failure itself
        return type(exc).__name__


def _refused(g: Any, exc: Any) -> NegotiateRefused:
    message = _describe(exc)
    lowered = message.lower()
    reason: Reason | None = next((r for text, r in _MESSAGES if text in lowered), None)
    undecryptable = _UNDECRYPTABLE.search(message)
    if undecryptable:  # a ticket for another principal, or one of ours under a key we lack
        reason = "no_key" if undecryptable["ticket"] == undecryptable["ours"] else "wrong_service"
    if reason is None:
        errors = g.raw.exceptions
        if isinstance(exc, errors.InvalidTokenError | errors.BadMechanismError):
            reason = "malformed"
        elif isinstance(exc, errors.DuplicateTokenError):
            reason = "replay"
        elif isinstance(exc, errors.ExpiredCredentialsError | errors.ExpiredContextError):
            reason = "expired"
        else:
            reason = "failed"
    return NegotiateRefused(reason, f"Kerberos refused the token: {message}")


class PrincipalMap:
    """Client principal → user name: ``alice@CORP.EXAMPLE.COM`` → ``alice`` when the realm is one
    of ``realms`` (compared case-insensitively), or the name ``user_map`` gives the principal."""

    def __init__(self, realms: list[str], user_map: dict[str, str]) -> None:
        self.realms = {realm.upper() for realm in realms}
        self.user_map = {key.lower(): value for key, value in user_map.items()}

    def user_name(self, principal: str) -> str | None:
        mapped = self.user_map.get(principal.lower())
        if mapped is not None:
            return mapped
        name, at, realm = principal.rpartition("@")
        if not at or not name or "/" in name or realm.upper() not in self.realms:
            return None  # another realm, or a service principal (host/…): not a user
        return name


@dataclass(frozen=True, slots=True)
class Kerberos:
    """What a kcd listener needs: the acceptor and the principal → user map."""

    acceptor: Acceptor
    users: PrincipalMap


def load(settings: KerberosConfig, hostname: str, resolve: Any) -> Kerberos:
    """Build from ``[kerberos]`` (``resolve`` turns a configured path into a file path)."""
    if not settings.keytab:
        raise ConfigError("kerberos.keytab: a listener has kcd = true but no keytab is configured")
    principal = settings.service_principal or f"HTTP/{hostname}"
    acceptor = Acceptor(Path(resolve(settings.keytab)), principal)
    log.info("kcd: accepting Negotiate for %s from %s", principal, acceptor.keytab)
    return Kerberos(acceptor, PrincipalMap(settings.realms, settings.user_map))
