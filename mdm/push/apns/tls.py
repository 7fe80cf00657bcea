"""The TLS context for the gateway: the MDM push certificate and key as the client identity,
ALPN ``h2``, the gateway verified against ``apns.ca_file`` or the system's trust store."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from mdm.push.types import ApnsIdentity


def client_context(identity: ApnsIdentity, ca_file: str | None) -> ssl.SSLContext:
    """Blocking (reads files, parses the key): run it in a thread."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    # ssl loads a certificate chain from files only: a private directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="mdm-apns-") as directory:
        os.chmod(directory, 0o700)
        cert = Path(directory) / "cert.pem"
        key = Path(directory) / "key.pem"
        cert.write_bytes(identity.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(identity.key_pem)
        try:
            context.load_cert_chain(str(cert), str(key))
        except ssl.SSLError as exc:
            raise ValueError(f"the push certificate and key do not load: {exc.reason or exc}") from None
    return context
