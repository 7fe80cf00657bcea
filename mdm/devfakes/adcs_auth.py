"""Authentication of the AD CS fake's web server, as IIS does it for ``/certsrv``.

- ``Negotiate``: SPNEGO/Kerberos accepted with the service keytab (the real KDC of the tests;
  ``exchange_auth.Acceptor``), the mutual-authentication token answered in
  ``WWW-Authenticate: Negotiate <token>``; the context then belongs to the TCP connection.
- ``NTLM``: pyspnego's NTLM acceptor over the users of a credential file (pyspnego reads it from
  the process-global ``NTLM_USER_FILE``; set while the fake offers NTLM). Two legs on one
  connection: NEGOTIATE → 401 with the CHALLENGE → AUTHENTICATE.
- ``Basic``: a users dict, compared in constant time.

Without (or with refused) credentials: 401 with one ``WWW-Authenticate`` header per offered scheme.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spnego

from mdm.devfakes import exchange_auth

log = logging.getLogger(__name__)

SCHEMES = ("negotiate", "ntlm", "basic")
_HEADER = re.compile(r"^\s*(Negotiate|NTLM|Basic)\s+(\S+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Caller:
    name: str     # "alice@CORP.EXAMPLE.COM", "CORP\\alice" (NTLM) or the Basic user name
    scheme: str


@dataclass(frozen=True)
class Outcome:
    """A caller (authenticated), or a 401 with these ``WWW-Authenticate`` values."""

    caller: Caller | None
    headers: list[str]


class Authenticator:
    def __init__(self, schemes: tuple[str, ...], *, keytab: Path | None,
                 basic_users: Mapping[str, str], ntlm_user_file: Path | None) -> None:
        unknown = set(schemes) - set(SCHEMES)
        if unknown or not schemes:
            raise ValueError(f"unknown authentication schemes {sorted(unknown)}")
        if "negotiate" in schemes and keytab is None:
            raise ValueError("Negotiate needs the service keytab")
        if "ntlm" in schemes and ntlm_user_file is None:
            raise ValueError("NTLM needs a user file")
        self.schemes = schemes
        self._acceptor = exchange_auth.Acceptor(keytab) if keytab is not None else None
        self._basic = dict(basic_users)
        self._ntlm_file = ntlm_user_file
        # connection (transport) → NTLM acceptor between the legs / the caller once authenticated
        self._ntlm: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.connections: weakref.WeakKeyDictionary[Any, Caller] = weakref.WeakKeyDictionary()

    def challenge(self) -> list[str]:
        values = {"negotiate": "Negotiate", "ntlm": "NTLM", "basic": 'Basic realm="localhost"'}
        return [values[s] for s in self.schemes]

    def authenticate(self, header: str | None, connection: Any) -> Outcome:
        """Blocking (the Kerberos acceptor): run in a thread."""
        if not header:
            known = self.connections.get(connection) if connection is not None else None
            return Outcome(known, []) if known else Outcome(None, self.challenge())
        match = _HEADER.match(header)
        scheme = match.group(1).lower() if match else ""
        if match is None or scheme not in self.schemes:
            return Outcome(None, self.challenge())
        try:
            token = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            log.info("adcs fake: %s credentials are not base64", scheme)
            return Outcome(None, self.challenge())
        if scheme == "basic":
            return self._basic_auth(token)
        if scheme == "ntlm":
            return self._ntlm_step(token, connection)
        assert self._acceptor is not None
        try:
            session, value = self._acceptor.accept(header.replace(match.group(1), "Negotiate", 1))
        except exchange_auth.AuthFailed:
            return Outcome(None, self.challenge())
        caller = Caller(session.principal, "negotiate")
        if connection is not None:
            self.connections[connection] = caller
        return Outcome(caller, [value])

    def _basic_auth(self, token: bytes) -> Outcome:
        user, _, password = token.decode("utf-8", "replace").partition(":")
        expected = self._basic.get(user)
        ok = expected is not None and hmac.compare_digest(expected.encode(), password.encode())
        if not ok:
            log.info("adcs fake: Basic credentials refused")
            return Outcome(None, self.challenge())
        return Outcome(Caller(user, "basic"), [])

    def _ntlm_step(self, token: bytes, connection: Any) -> Outcome:
        assert self._ntlm_file is not None
        if connection is None:
            return Outcome(None, self.challenge())
        os.environ["NTLM_USER_FILE"] = str(self._ntlm_file)
        context = self._ntlm.get(connection)
        if context is None or token[8:12] == b"\x01\x00\x00\x00":  # a new NEGOTIATE message
            context = spnego.server(protocol="ntlm")
            self._ntlm[connection] = context
        try:
            out = context.step(token)
        except Exception as exc:  # spnego raises many types; all mean "refused"
            log.info("adcs fake: NTLM refused: %s", exc)
            self._ntlm.pop(connection, None)
            return Outcome(None, self.challenge())
        if not context.complete:
            return Outcome(None, [f"NTLM {base64.b64encode(out or b'').decode()}"])
        self._ntlm.pop(connection, None)
        caller = Caller(str(context.client_principal), "ntlm")
        self.connections[connection] = caller
        return Outcome(caller, [])


def write_ntlm_users(path: Path, users: Mapping[str, str], domain: str) -> Path:
    """pyspnego's NTLM credential file: ``DOMAIN:user:password`` lines."""
    path.write_text("".join(f"{domain}:{user}:{password}\n" for user, password in users.items()))
    path.chmod(0o600)
    return path
