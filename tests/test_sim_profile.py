"""The simulator's view of enrollment profiles: signature and chain verification (real profiles
built and signed by the service's own builder and signer), identity extraction, Mdm-Signature."""

from __future__ import annotations

import base64
import hashlib
import plistlib
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mdm.ios import enrollment_profile as ep
from mdm.ios.signing import ProfileSigner, sign_profile
from mdm.pki.ca import CertificateAuthority
from mdm.pki.keys import generate_key
from mdm.pki.slots import issue_server_certificate
from mdm.sim import profile as P
from mdm.sim.identity import Identity


@pytest.fixture(scope="module")
def ca(pki_template: Path) -> CertificateAuthority:
    return CertificateAuthority.load(pki_template / "ca")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, unrelated CA with its own 'ios' signing certificate."""
    directory = tmp_path_factory.mktemp("other-pki")
    other = CertificateAuthority.create(directory / "ca", rsa_bits=2048)
    issue_server_certificate(other, directory / "certs", "ios", ["localhost"])
    return directory


def _spec(
    ca: CertificateAuthority, password: str = "s3cret-pw", roots: list | None = None
) -> ep.EnrollmentProfileSpec:
    key = generate_key("ec")
    cert = ca.issue(key.public_key(), common_name="alice device 1", days=30, client=True)
    return ep.EnrollmentProfileSpec(
        identifier="com.example.enrollment.1",
        profile_uuid=ep.new_uuid(),
        organization="Example",
        server_url="https://mdm.example.com/mdm/server",
        checkin_url="https://mdm.example.com/mdm/checkin",
        topic="com.apple.mgmt.External.0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        identity=ep.Pkcs12Identity(cert, key, (ca.issuing,), password),
        root_certificates=roots if roots is not None else [ca.root],
        access_rights=4095,
    )


def _signed(pki_dir: Path, spec: ep.EnrollmentProfileSpec) -> bytes:
    return sign_profile(ep.build_bytes(spec), ProfileSigner.from_slot(pki_dir / "certs"))


def test_valid_profile_is_verified_and_read(pki_template: Path, ca: CertificateAuthority) -> None:
    spec = _spec(ca)
    profile = P.parse_enrollment(_signed(pki_template, spec), [ca.root])
    assert profile.signed.trusted
    assert profile.identifier == "com.example.enrollment.1"
    assert profile.mdm.server_url == spec.server_url and profile.mdm.check_in_url == spec.checkin_url
    assert profile.mdm.topic == spec.topic and profile.mdm.sign_message is True
    assert profile.mdm.access_rights == 4095 and profile.mdm.check_out_when_removed
    assert profile.identity_kind == "pkcs12"
    assert [r.fingerprint(hashes.SHA256()) for r in profile.roots] == [ca.root.fingerprint(hashes.SHA256())]
    identity = P.identity_from_pkcs12(profile.identity_payload)
    assert identity.certificate == spec.identity.certificate  # type: ignore[union-attr]
    assert identity.common_name == "alice device 1"
    assert identity.chain == [ca.issuing]


def test_profile_without_given_ca_trusts_its_own_root_payload(
    pki_template: Path, ca: CertificateAuthority
) -> None:
    profile = P.parse_enrollment(_signed(pki_template, _spec(ca)), None)
    assert profile.signed.trusted


@pytest.mark.parametrize("where", [b"com.example.enrollment.1", b"mdm.example.com", b"Password"])
def test_tampered_profile_is_rejected(pki_template: Path, ca: CertificateAuthority, where: bytes) -> None:
    data = bytearray(_signed(pki_template, _spec(ca)))
    at = bytes(data).find(where)
    assert at > 0
    data[at] ^= 0x01
    with pytest.raises(P.ProfileError) as err:
        P.parse_enrollment(bytes(data), [ca.root])
    assert err.value.code == 1004


def test_tampered_signature_is_rejected(pki_template: Path, ca: CertificateAuthority) -> None:
    info = cms.ContentInfo.load(_signed(pki_template, _spec(ca)))
    signer = info["content"]["signer_infos"][0]
    sig = bytearray(signer["signature"].native)
    sig[10] ^= 0xFF
    signer["signature"] = bytes(sig)
    with pytest.raises(P.ProfileError, match="signature is not valid"):
        P.parse_enrollment(info.dump(force=True), [ca.root])


def test_profile_signed_by_another_ca_is_rejected(other_pki: Path, ca: CertificateAuthority) -> None:
    data = _signed(other_pki, _spec(ca))
    with pytest.raises(P.ProfileError, match="does not chain"):
        P.parse_enrollment(data, [ca.root])
    # Without an explicit CA the profile's own root payload (ours) does not vouch for that signer either.
    with pytest.raises(P.ProfileError, match="does not chain"):
        P.parse_enrollment(data, None)


def test_unsigned_or_garbage_profiles_are_rejected(ca: CertificateAuthority) -> None:
    with pytest.raises(P.ProfileError, match="not signed"):
        P.parse_enrollment(ep.build_bytes(_spec(ca)), [ca.root])
    with pytest.raises(P.ProfileError, match="neither a plist nor valid CMS"):
        P.parse_enrollment(b"\x30\x82\x01\x00garbage", [ca.root])
    with pytest.raises(P.ProfileError):
        P.parse_enrollment(b"", [ca.root])


def test_wrong_pkcs12_password_is_reported(pki_template: Path, ca: CertificateAuthority) -> None:
    profile = P.parse_enrollment(_signed(pki_template, _spec(ca)), [ca.root])
    payload = dict(profile.identity_payload, Password="not-the-password")
    with pytest.raises(P.ProfileError) as err:
        P.identity_from_pkcs12(payload)
    assert (err.value.domain, err.value.code) == ("MCCertificateErrorDomain", 9000)


def test_profile_without_mdm_payload_is_not_an_enrollment(
    pki_template: Path, ca: CertificateAuthority
) -> None:
    plist = ep.build(_spec(ca))
    plist["PayloadContent"] = [p for p in plist["PayloadContent"] if p["PayloadType"] != "com.apple.mdm"]
    data = sign_profile(ep.serialize(plist), ProfileSigner.from_slot(pki_template / "certs"))
    with pytest.raises(P.ProfileError, match=r"exactly one com\.apple\.mdm"):
        P.parse_enrollment(data, [ca.root])


def test_mdm_signature_is_a_detached_cms_over_the_body(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(key.public_key(), common_name="dev", days=1, client=True)
    identity = Identity(key, cert, [ca.issuing])
    body = plistlib.dumps({"Status": "Idle", "UDID": "00008130-0011223344556677"})
    signed = cms.ContentInfo.load(base64.b64decode(identity.sign(body)))["content"]
    assert signed["encap_content_info"]["content"].native is None  # detached
    signer = signed["signer_infos"][0]
    attrs = {a["type"].native: a["values"][0].native for a in signer["signed_attrs"]}
    assert attrs["message_digest"] == hashlib.sha256(body).digest()
    assert "signing_time" in attrs
    key.public_key().verify(
        signer["signature"].native, b"\x31" + signer["signed_attrs"].dump()[1:], ec.ECDSA(hashes.SHA256())
    )
    assert signed["certificates"][0].chosen.dump() == cert.public_bytes(
        serialization.Encoding.DER
    )
