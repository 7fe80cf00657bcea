"""Kerberos over HTTP for the WSMan fake: the Negotiate acceptor and WinRM message encryption.

What IIS/WinRM does, and what pypsrp expects of it:

- A request without (or with a bad) ``Authorization`` header gets 401 with
  ``WWW-Authenticate: Negotiate`` and ``WWW-Authenticate: Kerberos``.
- ``Authorization: Negotiate <token>`` (or ``Kerberos <token>``; the token may be SPNEGO or a raw
  Kerberos AP-REQ) is accepted with the service keytab (passed through the gssapi credential
  store, not the process-global ``KRB5_KTNAME``); the AP-REP goes back in
  ``WWW-Authenticate: <scheme> <token>`` (mutual authentication).
- The security context belongs to the TCP connection: later requests on the same connection carry
  no header. Over plain HTTP the SOAP messages are then wrapped with that context
  (``multipart/encrypted``, ``application/HTTP-Kerberos-session-encrypted`` or
  ``...SPNEGO-session-encrypted``) and the answers are wrapped the same way. Over HTTPS the channel
  binding (``tls-server-end-point``) is checked when the client sends one.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gssapi
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from pypsrp.encryption import WinRMEncryption
from spnego._gss import GSSAPIProxy
from spnego.channel_bindings import GssChannelBindings

log = logging.getLogger(__name__)

SCHEMES = ("Negotiate", "Kerberos")
_AUTH = re.compile(r"^\s*(Negotiate|Kerberos)\s+([A-Za-z0-9+/=]+)\s*$", re.IGNORECASE)
_PROTOCOL = re.compile(r'protocol="?([^";]+)"?', re.IGNORECASE)
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
ENCRYPTED_TYPES = ("multipart/encrypted", "multipart/x-multi-encrypted")
_PROTOCOLS = (WinRMEncryption.KERBEROS, WinRMEncryption.SPNEGO)


class AuthFailed(Exception):
    """The token was refused (the reason is logged, never returned to the client)."""


class BadEncryption(Exception):
    """An encrypted body that does not unwrap with the connection's context."""


@dataclass
class Session:
    """An authenticated connection: the client principal and its security context."""

    principal: str
    context: Any  # spnego GSSAPIProxy (wrap_winrm / unwrap_winrm)
    scheme: str


def test_certificate(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for ``host`` in ``directory``: (ca, cert, key) files."""
    from mdm.devfakes.certs import make_ca, server_certificate

    ca = make_ca("Exchange fake test CA")
    server = server_certificate(ca, host)
    files = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    for path, data in zip(files, (ca.cert_pem, server.cert_pem, server.key_pem), strict=True):
        path.write_bytes(data)
    return files


def tls_end_point_binding(cert_pem: bytes) -> bytes:
    """RFC 5929 ``tls-server-end-point`` application data for a server certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(Encoding.DER))
    return b"tls-server-end-point:" + digest.finalize()


class Acceptor:
    """Accepts Kerberos/SPNEGO tokens for the service principals in ``keytab``."""

    def __init__(self, keytab: Path, *, channel_binding: bytes | None = None) -> None:
        self.keytab = keytab
        self.channel_binding = channel_binding

    def challenge_headers(self) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", scheme) for scheme in SCHEMES]

    def accept(self, header: str) -> tuple[Session, str]:
        """Run the (single-leg) Kerberos exchange; returns the session and the header value with
        the mutual-authentication token. Raises ``AuthFailed``."""
        match = _AUTH.match(header)
        if not match:
            raise AuthFailed("no Negotiate/Kerberos token")
        scheme = match.group(1).capitalize()
        try:
            token = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AuthFailed("token is not base64") from exc
        try:
            creds = gssapi.Credentials(usage="accept", store={"keytab": str(self.keytab)})
            bindings = (GssChannelBindings(application_data=self.channel_binding)
                        if self.channel_binding else None)
            context = GSSAPIProxy(usage="accept", protocol="kerberos", _gssapi_credential=creds,
                                  channel_bindings=bindings)
            out = context.step(token)
        except Exception as exc:  # gssapi/spnego raise many types; all mean "refused"
            log.info("exchange fake: Kerberos token refused: %s", exc)
            raise AuthFailed(str(exc)) from exc
        if not context.complete:
            raise AuthFailed("Kerberos exchange did not complete in one leg")
        principal = str(context.client_principal or "")
        value = f"{scheme} {base64.b64encode(out).decode()}" if out else scheme
        return Session(principal=principal, context=context, scheme=scheme), value


def is_encrypted(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in ENCRYPTED_TYPES


def unwrap(session: Session, content_type: str, body: bytes) -> tuple[bytes, str]:
    """Decrypt a WinRM-encrypted body; returns the SOAP bytes and the MIME protocol to answer
    with. Raises ``BadEncryption``."""
    protocol_m = _PROTOCOL.search(content_type)
    boundary_m = _BOUNDARY.search(content_type)
    protocol = protocol_m.group(1) if protocol_m else ""
    if protocol not in _PROTOCOLS or not boundary_m:
        raise BadEncryption(f"unsupported encryption protocol {protocol!r}")
    try:
        data = WinRMEncryption(session.context, protocol).unwrap_message(body, boundary_m.group(1))
    except Exception as exc:
        raise BadEncryption(str(exc)) from exc
    return data, protocol


def wrap(session: Session, protocol: str, soap: bytes) -> tuple[bytes, str]:
    """Encrypt an answer; returns the body and its Content-Type."""
    content_type, body = WinRMEncryption(session.context, protocol).wrap_message(soap)
    return body, f'{content_type};protocol="{protocol}";boundary="Encrypted Boundary"'
