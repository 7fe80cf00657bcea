"""An APNs request as the client sends it and the h2 configuration both ends use, shared by the
tests of the APNs client's h2 fast paths."""

from __future__ import annotations

from h2.config import H2Configuration

REQUEST = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"api.push.apple.com"),
           (b":path", b"/3/device/" + b"ab" * 32), (b"apns-topic", b"com.apple.mgmt.x"),
           (b"apns-push-type", b"mdm"), (b"apns-priority", b"10")]
BODY = b'{"mdm":"magic"}'


def h2_config(client: bool) -> H2Configuration:
    return H2Configuration(client_side=client, header_encoding=None, validate_outbound_headers=False,
                           normalize_outbound_headers=False, validate_inbound_headers=False,
                           normalize_inbound_headers=False)
