"""A certificate with an unknown X.509 version (``x509.InvalidVersion``, not a ValueError) is
malformed input everywhere a device or an administrator can hand one in, never a 500."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pki_support import make_ca, make_leaf

from mdm.ios import identity, inventory
from mdm.pki.trust import ClientCertVerifier, IdentityRejected
from mdm.pki.x509_errors import CERTIFICATE_ERRORS

VERSION_3 = b"\xa0\x03\x02\x01\x02"


@pytest.fixture(scope="module")
def setup() -> tuple[ClientCertVerifier, bytes]:
    root = make_ca("Root")
    leaf = make_leaf(root, "device", eku=[x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH], sans=[])
    der = leaf.cert.public_bytes(Encoding.DER)
    assert der.count(VERSION_3) == 1
    bad = der.replace(VERSION_3, b"\xa0\x03\x02\x01\x43")  # version field 67
    with pytest.raises(x509.InvalidVersion):
        x509.load_der_x509_certificate(bad)
    assert not issubclass(x509.InvalidVersion, ValueError)
    assert x509.InvalidVersion in CERTIFICATE_ERRORS
    return ClientCertVerifier([root.cert], []), bad


def test_client_certificate_verifier_calls_it_malformed(setup: tuple[ClientCertVerifier, bytes]) -> None:
    verifier, bad = setup
    with pytest.raises(IdentityRejected) as caught:
        verifier.verify_der(bad)
    assert caught.value.reason == "malformed"


def test_mdm_signature_signer_is_malformed(setup: tuple[ClientCertVerifier, bytes]) -> None:
    with pytest.raises(identity.IdentityError) as caught:
        identity._signer_entry(setup[1])
    assert caught.value.reason == "malformed" and caught.value.status == 400


Setup = tuple[ClientCertVerifier, bytes]


def test_reported_certificate_list_keeps_the_entry_with_an_error(setup: Setup) -> None:
    item = inventory._certificate_item({"CommonName": "x", "Data": setup[1], "IsIdentity": False})
    assert item["common_name"] == "x" and item["error"] == "certificate data is not valid DER"
