"""Typed configuration-profile builders: every payload validates against its Apple schema
(``mdm/profiles/<PayloadType>.yaml`` + common keys), the profile against ``TopLevel.yaml``."""

from __future__ import annotations

import plistlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mdm.ios import schema
from mdm.ios.profiles import (
    VPN,
    EAPClientConfiguration,
    ExchangeActiveSync,
    IKEv2Settings,
    MailAccount,
    MailServer,
    OnDemandRule,
    PasscodePolicy,
    PayloadBase,
    PKCS12Identity,
    Profile,
    Restrictions,
    RootCertificate,
    SCEPIdentity,
    SecurityAssociation,
    SubjectAltName,
    WiFi,
)

IDENTITY_UUID = uuid.UUID("0A6E3C55-3E43-4B8A-9B5D-8B7E3C7A1F01")
ROOT_UUID = uuid.UUID("0A6E3C55-3E43-4B8A-9B5D-8B7E3C7A1F02")
SMIME_UUID = uuid.UUID("0A6E3C55-3E43-4B8A-9B5D-8B7E3C7A1F03")


@pytest.fixture(scope="module")
def identity() -> tuple[bytes, bytes]:
    """(self-signed certificate DER, PKCS#12 protected by 'secret')."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    p12 = pkcs12.serialize_key_and_certificates(
        b"alice", key, cert, None, serialization.BestAvailableEncryption(b"secret")
    )
    return cert.public_bytes(serialization.Encoding.DER), p12


def root_pem(pki_template: Path) -> str:
    return (pki_template / "ca" / "root.pem").read_text()


def representative_payloads(pki_template: Path, identity: tuple[bytes, bytes]) -> list[PayloadBase]:
    """One of each builder with (nearly) every field set, so that every Apple key name and value
    type the builders can emit is checked against the schema."""
    _, p12 = identity
    return [
        PasscodePolicy(
            force_pin=True,
            allow_simple=False,
            require_alphanumeric=True,
            min_length=8,
            min_complex_chars=1,
            max_failed_attempts=10,
            max_inactivity=5,
            max_pin_age_in_days=90,
            pin_history=5,
            max_grace_period=1,
        ),
        Restrictions(
            **{
                name: False
                for name in Restrictions.model_fields
                if name
                not in {"type", "other", "identifier", "uuid", "display_name", "description", "organization"}
            },
            other={"allowChat": False, "ratingRegion": "us", "safariAcceptCookies": 1.5},
        ),
        WiFi(
            ssid="corp",
            hidden_network=True,
            auto_join=True,
            encryption_type="WPA2",
            eap=EAPClientConfiguration(
                accept_eap_types=[13, 25],
                username="alice",
                password="pw",
                one_time_password=False,
                outer_identity="anonymous",
                trusted_certificate_uuids=[ROOT_UUID],
                trusted_server_names=["radius.example.com"],
                allow_trust_exceptions=False,
                ttls_inner_authentication="MSCHAPv2",
                tls_minimum_version="1.2",
                tls_maximum_version="1.3",
            ),
            certificate_uuid=IDENTITY_UUID,
            proxy_type="Manual",
            proxy_server="proxy.example.com",
            proxy_port=3128,
            proxy_username="u",
            proxy_password="p",
            captive_bypass=False,
            disable_mac_randomization=True,
        ),
        WiFi(
            ssid="guest",
            encryption_type="WPA3",
            password="guest-pass",
            proxy_type="Auto",
            proxy_pac_url="https://proxy.example.com/wpad.dat",
        ),
        VPN(
            name="Corp VPN",
            ikev2=IKEv2Settings(
                remote_address="vpn.example.com",
                local_identifier="alice@example.com",
                remote_identifier="vpn.example.com",
                authentication_method="Certificate",
                certificate_uuid=IDENTITY_UUID,
                certificate_type="ECDSA256",
                server_certificate_issuer_common_name="Example CA",
                server_certificate_common_name="vpn.example.com",
                extended_auth_enabled=True,
                auth_name="alice",
                auth_password="pw",
                dead_peer_detection_rate="Medium",
                enable_pfs=True,
                disable_mobike=False,
                disable_redirect=False,
                enable_certificate_revocation_check=True,
                nat_keepalive_interval=30,
                mtu=1400,
                ike_sa=SecurityAssociation(
                    encryption_algorithm="AES-256-GCM",
                    integrity_algorithm="SHA2-384",
                    diffie_hellman_group=20,
                    lifetime_minutes=1440,
                ),
                child_sa=SecurityAssociation(
                    encryption_algorithm="AES-256",
                    integrity_algorithm="SHA2-256",
                    diffie_hellman_group=19,
                    lifetime_minutes=60,
                ),
                on_demand_enabled=True,
                on_demand_rules=[
                    OnDemandRule(action="Connect", interface_type="Cellular"),
                    OnDemandRule(
                        action="Disconnect",
                        ssids=["office"],
                        dns_domains=["corp.example.com"],
                        dns_servers=["10.0.0.1"],
                        url_probe="https://probe.example.com",
                    ),
                ],
                disconnect_on_idle=True,
                disconnect_on_idle_timer=600,
            ),
        ),
        VPN(
            name="PSK VPN",
            ikev2=IKEv2Settings(
                remote_address="203.0.113.1",
                local_identifier="me",
                remote_identifier="203.0.113.1",
                authentication_method="SharedSecret",
                shared_secret="psk",
            ),
        ),
        ExchangeActiveSync(
            host="mail.example.com",
            ssl=True,
            email_address="alice@example.com",
            username="alice",
            password="pw",
            oauth=False,
            certificate_uuid=IDENTITY_UUID,
            mail_days_to_sync=14,
            prevent_move=True,
            prevent_app_sheet=True,
            disable_mail_recents_syncing=True,
            allow_mail_drop=False,
            smime_signing_enabled=True,
            smime_signing_certificate_uuid=SMIME_UUID,
            smime_encryption_enabled=True,
            smime_encryption_certificate_uuid=SMIME_UUID,
            enable_mail=True,
            enable_contacts=True,
            enable_calendars=True,
            enable_reminders=False,
            enable_notes=False,
        ),
        MailAccount(
            account_type="IMAP",
            account_description="Work mail",
            account_name="Alice",
            email_address="alice@example.com",
            incoming=MailServer(host="imap.example.com", port=993, username="alice", password="pw"),
            outgoing=MailServer(
                host="smtp.example.com", port=587, ssl=True, username="alice", authentication="CRAMMD5"
            ),
            outgoing_password_same_as_incoming=True,
            imap_path_prefix="INBOX",
            prevent_move=True,
            prevent_app_sheet=False,
            allow_mail_drop=True,
            disable_mail_recents_syncing=False,
            smime_signing_enabled=True,
            smime_signing_certificate_uuid=SMIME_UUID,
            smime_encryption_enabled=False,
            smime_encryption_certificate_uuid=SMIME_UUID,
        ),
        MailAccount(
            account_type="POP",
            incoming=MailServer(host="pop.example.com", authentication="None"),
            outgoing=MailServer(host="smtp.example.com", ssl=False, authentication="NTLM"),
        ),
        RootCertificate(
            uuid=ROOT_UUID,
            certificate=root_pem(pki_template),
            filename="root.cer",
            display_name="Example Root",
        ),
        PKCS12Identity(uuid=IDENTITY_UUID, pkcs12=p12, password="secret", filename="alice.p12"),
        PKCS12Identity(uuid=SMIME_UUID, pkcs12=p12),
        SCEPIdentity(
            url="https://scep.example.com/scep",
            name="CA",
            subject=[("O", "Example"), ("CN", "alice")],
            challenge="one-time",
            key_size=2048,
            key_usage=5,
            ca_fingerprint="ab" * 32,
            retries=3,
            retry_delay=10,
            key_is_extractable=False,
            subject_alt_name=SubjectAltName(
                rfc822_name="alice@example.com",
                dns_name="alice.example.com",
                uri="https://example.com/alice",
                nt_principal_name="alice@EXAMPLE.COM",
            ),
        ),
    ]


def full_profile(pki_template: Path, identity: tuple[bytes, bytes]) -> Profile:
    return Profile(
        identifier="com.example.full",
        display_name="Everything",
        description="All builders",
        organization="Example",
        removal_disallowed=True,
        scope="System",
        payloads=representative_payloads(pki_template, identity),
    )


def test_every_payload_validates_against_its_schema(
    pki_template: Path, identity: tuple[bytes, bytes]
) -> None:
    profile = full_profile(pki_template, identity)
    document = profile.to_dict()
    covered = set()
    for payload, built in zip(profile.payloads, document["PayloadContent"], strict=True):
        assert built["PayloadType"] == payload.payload_type
        assert schema.schema_file(payload_type=built["PayloadType"]).exists()
        assert schema.validate_payload(built, os_name="iOS") == [], payload.type
        covered.add(built["PayloadType"])
    assert covered == {
        "com.apple.mobiledevice.passwordpolicy",
        "com.apple.applicationaccess",
        "com.apple.wifi.managed",
        "com.apple.vpn.managed",
        "com.apple.eas.account",
        "com.apple.mail.managed",
        "com.apple.security.root",
        "com.apple.security.pkcs12",
        "com.apple.security.scep",
    }
    # The whole profile, top level included (TopLevel.yaml).
    assert schema.validate_profile(document, os_name="iOS") == []


def test_profile_serialises_to_the_same_plist(pki_template: Path, identity: tuple[bytes, bytes]) -> None:
    profile = full_profile(pki_template, identity)
    data = profile.to_bytes()
    assert data.startswith(b"<?xml")
    assert plistlib.loads(data) == profile.to_dict()
    top = plistlib.loads(data)
    assert top["PayloadType"] == "Configuration" and top["PayloadVersion"] == 1
    assert top["PayloadRemovalDisallowed"] is True and top["PayloadScope"] == "System"
    root = next(p for p in top["PayloadContent"] if p["PayloadType"] == "com.apple.security.root")
    assert (
        x509.load_der_x509_certificate(root["PayloadContent"]).subject
        == x509.load_pem_x509_certificate(root_pem(pki_template).encode()).subject
    )
    scep = next(p for p in top["PayloadContent"] if p["PayloadType"] == "com.apple.security.scep")
    assert scep["PayloadContent"]["Subject"] == [[["O", "Example"]], [["CN", "alice"]]]
    assert scep["PayloadContent"]["CAFingerprint"] == bytes.fromhex("ab" * 32)
    vpn = next(p for p in top["PayloadContent"] if p["PayloadType"] == "com.apple.vpn.managed")
    assert vpn["IKEv2"]["EnablePFS"] == 1 and vpn["IKEv2"]["DisableMOBIKE"] == 0
    mail = next(p for p in top["PayloadContent"] if p["PayloadType"] == "com.apple.mail.managed")
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["OutgoingMailServerAuthentication"] == "EmailAuthCRAMMD5"


def test_uuids_are_stable_for_the_same_content_and_change_with_it() -> None:
    def build(min_length: int) -> dict[str, Any]:
        return Profile(
            identifier="com.example.p", display_name="P", payloads=[PasscodePolicy(min_length=min_length)]
        ).to_dict()

    a, b, c = build(6), build(6), build(8)
    assert a == b
    assert a["PayloadUUID"] != c["PayloadUUID"]
    assert a["PayloadContent"][0]["PayloadUUID"] != c["PayloadContent"][0]["PayloadUUID"]
    uuid.UUID(a["PayloadUUID"])
    assert a["PayloadUUID"] == a["PayloadUUID"].upper()


def test_profile_from_json_arguments(identity: tuple[bytes, bytes]) -> None:
    """The API form: snake_case keys, data as base64, discriminated by "type"."""
    import base64

    _, p12 = identity
    spec = {
        "identifier": "com.example.json",
        "display_name": "From JSON",
        "payloads": [
            {
                "type": "pkcs12",
                "uuid": str(IDENTITY_UUID),
                "pkcs12": base64.b64encode(p12).decode(),
                "password": "secret",
            },
            {
                "type": "wifi",
                "ssid": "corp",
                "encryption_type": "WPA2",
                "eap": {"accept_eap_types": [13]},
                "certificate_uuid": str(IDENTITY_UUID).lower(),
            },
        ],
    }
    document = Profile.model_validate(spec).to_dict()
    assert schema.validate_profile(document, os_name="iOS") == []
    assert document["PayloadContent"][0]["PayloadContent"] == p12
    assert document["PayloadContent"][1]["PayloadCertificateUUID"] == str(IDENTITY_UUID).upper()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"payloads": []}, "at least 1 item"),
        ({"payloads": [{"type": "passcode", "min_length": 17}]}, "less than or equal to 16"),
        ({"payloads": [{"type": "passcode", "minimum": 4}]}, "Extra inputs are not permitted"),
        ({"payloads": [{"type": "printer"}]}, "does not match any of the expected tags"),
        (
            {"payloads": [{"type": "wifi", "ssid": "x", "encryption_type": "None", "password": "p"}]},
            "open network",
        ),
        (
            {"payloads": [{"type": "wifi", "ssid": "x", "eap": {"accept_eap_types": [13]}}]},
            "EAP-TLS (13) needs",
        ),
        (
            {
                "payloads": [
                    {
                        "type": "wifi",
                        "ssid": "x",
                        "encryption_type": "WPA2",
                        "eap": {"accept_eap_types": [99]},
                    }
                ]
            },
            "accept_eap_types.0",
        ),
        ({"payloads": [{"type": "wifi", "ssid": "x", "proxy_type": "Manual"}]}, "needs proxy_server"),
        ({"payloads": [{"type": "wifi", "ssid": "é" * 17}]}, "at most 32 bytes"),
        (
            {"payloads": [{"type": "wifi", "ssid": "x", "certificate_uuid": str(IDENTITY_UUID)}]},
            "not the uuid of a root_certificate/pkcs12/scep payload",
        ),
        (
            {
                "payloads": [
                    {
                        "type": "vpn",
                        "name": "v",
                        "ikev2": {
                            "remote_address": "a",
                            "local_identifier": "b",
                            "remote_identifier": "c",
                            "authentication_method": "SharedSecret",
                        },
                    }
                ]
            },
            "needs shared_secret",
        ),
        (
            {
                "payloads": [
                    {
                        "type": "mail",
                        "account_type": "POP",
                        "imap_path_prefix": "x",
                        "incoming": {"host": "a"},
                        "outgoing": {"host": "b"},
                    }
                ]
            },
            "IMAP accounts only",
        ),
        (
            {"payloads": [{"type": "exchange", "host": "h", "smime_signing_enabled": True}]},
            "needs smime_signing_certificate_uuid",
        ),
        (
            {"payloads": [{"type": "root_certificate", "certificate": "bm90IGEgY2VydA=="}]},
            "not an X.509 certificate",
        ),
        ({"payloads": [{"type": "pkcs12", "pkcs12": "not base64!"}]}, "must be base64"),
        ({"payloads": [{"type": "scep", "url": "ftp://ca.example.com"}]}, "http(s):// URL"),
        (
            {
                "payloads": [
                    {"type": "passcode", "identifier": "x"},
                    {"type": "restrictions", "identifier": "x"},
                ]
            },
            "identifiers must be unique",
        ),
        (
            {"payloads": [{"type": "restrictions", "allow_camera": False, "other": {"allowCamera": True}}]},
            "allowCamera given both",
        ),
        ({"identifier": "bad identifier", "payloads": [{"type": "passcode"}]}, "should match pattern"),
    ],
)
def test_builders_refuse_bad_input(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        Profile.model_validate({"identifier": "com.example.bad", "display_name": "Bad", **spec})
    assert fragment in str(err.value)


def test_pkcs12_must_open_with_its_password(identity: tuple[bytes, bytes]) -> None:
    _, p12 = identity
    with pytest.raises(ValidationError, match="cannot be opened with this password"):
        PKCS12Identity(pkcs12=p12, password="wrong")
    PKCS12Identity(pkcs12=p12, password="secret")


def test_unknown_restriction_keys_are_caught_by_the_schema() -> None:
    document = Profile(
        identifier="com.example.r",
        display_name="R",
        payloads=[Restrictions(other={"allowCamra": False, "allowChat": "no"})],
    ).to_dict()
    assert [str(p) for p in schema.validate_profile(document, os_name="iOS")] == [
        "PayloadContent[0].allowCamra: unknown key (did you mean 'allowCamera'?)",
        "PayloadContent[0].allowChat: expected <boolean>, got string",
    ]


@settings(max_examples=60, deadline=None)
@given(
    flags=st.dictionaries(
        st.sampled_from(sorted(n for n in Restrictions.model_fields if n.startswith(("allow", "force")))),
        st.booleans(),
    ),
    minimum=st.integers(min_value=0, max_value=16),
    attempts=st.one_of(st.none(), st.integers(min_value=2, max_value=11)),
    ssid=st.text(
        alphabet=st.characters(codec="utf-8", categories=("L", "N")), min_size=1, max_size=32
    ).filter(lambda s: len(s.encode()) <= 32),
)
def test_any_valid_builder_input_gives_a_valid_profile(
    flags: dict[str, bool], minimum: int, attempts: int | None, ssid: str
) -> None:
    profile = Profile(
        identifier="com.example.h",
        display_name="H",
        payloads=[
            Restrictions(**flags),  # type: ignore[arg-type]
            PasscodePolicy(min_length=minimum, max_failed_attempts=attempts),
            WiFi(ssid=ssid, encryption_type="WPA2", password="x" * 8),
        ],
    )
    assert schema.validate_profile(profile.to_dict(), os_name="iOS") == []
