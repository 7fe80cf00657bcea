"""RFC 9440 ``Client-Cert`` / ``Client-Cert-Chain``: the client certificate a TLS-terminating
proxy forwards to a plain-HTTP listener (iOS and KES). Parsing only; whether the sender is a
trusted proxy is the listener's check (``mdm.server.peers``), made before this is called."""

from __future__ import annotations

import base64
import binascii

CLIENT_CERT_HEADER = "Client-Cert"
CLIENT_CERT_CHAIN_HEADER = "Client-Cert-Chain"
MAX_HEADER = 64 * 1024
MAX_CHAIN = 8


class ForwardedCertError(ValueError):
    """The header is not an RFC 8941 byte sequence (``:base64:``) or a list of them."""


def sf_binary(value: str, header: str = CLIENT_CERT_HEADER) -> bytes:
    """RFC 8941 byte sequence (``:base64:``) as RFC 9440 uses it."""
    text = value.strip()
    if len(text) > MAX_HEADER:
        raise ForwardedCertError(f"{header} is too long")
    if len(text) < 3 or text[0] != ":" or text[-1] != ":":
        raise ForwardedCertError(f"{header} is not an RFC 9440 byte sequence (:base64:)")
    try:
        return base64.b64decode(text[1:-1], validate=True)
    except (binascii.Error, ValueError):
        raise ForwardedCertError(f"{header} is not valid base64") from None


def parse(client_cert: str, client_cert_chain: str | None) -> tuple[bytes, list[bytes]]:
    """The certificate's DER and the chain's (intermediates, nearest first)."""
    der = sf_binary(client_cert)
    if not client_cert_chain:
        return der, []
    items = client_cert_chain.split(",")
    if len(items) > MAX_CHAIN:
        raise ForwardedCertError(f"{CLIENT_CERT_CHAIN_HEADER} has more than {MAX_CHAIN} certificates")
    return der, [sf_binary(item, CLIENT_CERT_CHAIN_HEADER) for item in items]
