"""TLS contexts per listener, swappable at run time (certificate replacement, ``mdm reload``).

An ``ssl.SSLContext`` given to ``create_server`` is fixed for the socket's life, so each listener
gets a small front context whose SNI callback moves every new handshake onto the *current*
context. Replacing the current context affects the next handshake; established connections keep
the context they were made with.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class TLSFilesError(Exception):
    """Certificate/key files for a slot are missing, unreadable or do not match."""


def build_server_context(
    cert_file: Path,
    key_file: Path,
    *,
    client_ca_file: Path | None = None,
    require_client_cert: bool = False,
    slot: str = "",
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.options |= ssl.OP_NO_COMPRESSION
    for path in (cert_file, key_file):
        if not path.exists():
            raise TLSFilesError(
                f"slot {slot}: {path} is missing (run `mdm init`, or `mdm certs set -t {slot}`)"
            )
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except PermissionError as exc:
        # The ssl module does not say which of the two files it could not open.
        unreadable = exc.filename or next(
            (p for p in (cert_file, key_file) if not os.access(p, os.R_OK)), f"{cert_file} or {key_file}"
        )
        raise TLSFilesError(f"slot {slot}: {unreadable} is not readable by this user") from None
    except ssl.SSLError as exc:
        raise TLSFilesError(
            f"slot {slot}: {cert_file} / {key_file} unusable ({exc.reason or exc}); "
            "the key must match the certificate"
        ) from None
    if client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


class ReloadableContext:
    """The context handed to the socket; forwards each handshake to ``current``.

    The front context is a full context of its own (certificate, client-CA list, verify mode),
    because the verify mode and the CA list sent in CertificateRequest are taken from the context
    the connection was created with; only the certificate and key follow ``current``.
    """

    def __init__(self, build: Callable[[], ssl.SSLContext]) -> None:
        self._build = build
        self.front = build()
        self.current = self.front
        self.front.sni_callback = self._select

    def _select(self, sock: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if self.current is not self.front:
            sock.context = self.current

    def reload(self) -> None:
        """Rebuild from the files on disk; raises TLSFilesError and keeps the old one if bad."""
        self.current = self._build()
