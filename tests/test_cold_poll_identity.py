"""A cold certificate's check (``ClientCertVerifier``, ``IdentityResolver``) is cheaper but refuses
exactly what it refused: one chain verifier per second must not move a leaf's or a CA's expiry,
and a certificate parsed once for the signer look-up is the one whose chain is checked."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID
from pki_support import Issuer, make_ca, make_leaf

from mdm.ios.identity import IdentityError, IdentityResolver
from mdm.pki import trust
from mdm.pki.trust import ClientCertVerifier, IdentityRejected


class Clock:
    """``datetime`` for the trust module with a settable ``now``."""

    at = datetime.now(UTC)

    @classmethod
    def now(cls, tz: object = None) -> datetime:
        return cls.at

    fromtimestamp = staticmethod(datetime.fromtimestamp)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Clock]]:
    monkeypatch.setattr(trust, "datetime", Clock)
    yield Clock


def _leaf(parent: Issuer, cn: str, **kw: Any) -> Issuer:
    return make_leaf(parent, cn, eku=[ExtendedKeyUsageOID.CLIENT_AUTH], **kw)


def _der(issuer: Issuer) -> bytes:
    return issuer.cert.public_bytes(serialization.Encoding.DER)


def _whole(t: datetime) -> datetime:
    return t.replace(microsecond=0)


def test_a_leaf_expiring_within_the_verifiers_second_is_refused(clock: type[Clock]) -> None:
    root = make_ca("root")
    end = _whole(datetime.now(UTC)) + timedelta(days=1)
    leaf = _leaf(root, "device", not_after=end)
    other = _leaf(root, "other")
    verifier = ClientCertVerifier([root.cert], [], cache_size=10)
    clock.at = end - timedelta(microseconds=1)  # the verifier of this second is built now
    verifier.verify_der(_der(other))
    assert verifier.verify_der(_der(leaf)).not_after == end
    clock.at = end + timedelta(microseconds=300_000)  # the same whole second
    with pytest.raises(IdentityRejected) as refused:
        verifier.verify_der(_der(leaf))
    assert refused.value.reason == "expired"
    fresh = ClientCertVerifier([root.cert], [], cache_size=10)  # a cold certificate, same second
    fresh.verify_der(_der(other))
    with pytest.raises(IdentityRejected) as refused:
        fresh.verify_der(_der(leaf))
    assert refused.value.reason == "expired"


def test_a_ca_that_expired_is_refused_from_the_next_second(clock: type[Clock]) -> None:
    ca_end = _whole(datetime.now(UTC)) + timedelta(days=1)
    root = make_ca("root", not_after=ca_end)
    before = _leaf(root, "before", not_after=ca_end)
    after = _leaf(root, "after", not_after=ca_end + timedelta(days=30))
    verifier = ClientCertVerifier([root.cert], [], cache_size=10)
    clock.at = ca_end - timedelta(seconds=1)
    verifier.verify_der(_der(before))
    clock.at = ca_end + timedelta(seconds=1, microseconds=1)
    with pytest.raises(IdentityRejected) as refused:
        verifier.verify_der(_der(after))
    assert refused.value.reason == "untrusted"


def test_a_certificate_issued_this_second_is_accepted_at_once() -> None:
    root = make_ca("root")
    verifier = ClientCertVerifier([root.cert], [], cache_size=10)
    verifier.verify_der(_der(_leaf(root, "warm")))  # this second's verifier exists
    for n in range(5):
        leaf = _leaf(root, f"new-{n}", not_before=_whole(datetime.now(UTC)))
        assert verifier.verify_der(_der(leaf)).subject_cn == f"new-{n}"


def test_anchors_replaced_take_effect_at_once() -> None:
    old, new = make_ca("old"), make_ca("new")
    verifier = ClientCertVerifier([old.cert], [], cache_size=10)
    verifier.verify_der(_der(_leaf(old, "a")))
    with pytest.raises(IdentityRejected):
        verifier.verify_der(_der(_leaf(new, "b")))
    verifier.set_anchors([old.cert, new.cert])
    assert verifier.verify_der(_der(_leaf(new, "c"))).subject_cn == "c"


def _signature(signer: Issuer, body: bytes, extra: list[x509.Certificate] | None = None) -> str:
    builder = pkcs7.PKCS7SignatureBuilder().set_data(body).add_signer(
        signer.cert, signer.key, hashes.SHA256()
    )
    for cert in extra or []:
        builder = builder.add_certificate(cert)
    der = builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature])
    return base64.b64encode(der).decode()


def test_a_signer_checked_once_parsed_is_refused_when_untrusted_revoked_or_tampered() -> None:
    root, foreign = make_ca("root"), make_ca("foreign")
    device = _leaf(root, "device")
    stranger = _leaf(foreign, "stranger")
    verifier = ClientCertVerifier([root.cert], [], cache_size=10)
    resolver = IdentityResolver(verifier, trusted_proxies=[], signature_max_age=3600, cache_size=10)
    body = b"<plist>idle</plist>"
    identity = resolver.from_signature(_signature(device, body), body)
    assert identity.cert.subject_cn == "device"
    with pytest.raises(IdentityError) as refused:
        resolver.from_signature(_signature(device, body), body + b" ")
    assert refused.value.reason == "bad_signature"
    for _ in range(2):  # cold, then with its signer entry cached
        with pytest.raises(IdentityError) as refused:
            resolver.from_signature(_signature(stranger, body), body)
        assert refused.value.reason == "untrusted"
    verifier.add_revoked(format(device.cert.serial_number, "x"))
    with pytest.raises(IdentityError) as refused:
        resolver.from_signature(_signature(device, body), body)
    assert refused.value.reason == "revoked"
    with pytest.raises(IdentityError) as refused:
        resolver.from_signature("not base64!", body)
    assert refused.value.reason == "malformed"
    with pytest.raises(IdentityError) as refused:
        resolver.from_signature(_signature(device, body)[:-2] + "=A", body)  # bad padding
    assert refused.value.reason == "malformed"
