"""The enrollment profile itself: structure against Apple's schema, the PKCS#12 identity, the
CMS signature checked with the openssl CLI, the APNs topic, and the table's migration."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from enroll_support import (
    APNS_TOML,
    PUSH_PEM,
    PUSH_TOPIC,
    open_pkcs12,
    openssl_rejects,
    openssl_verify,
    parse,
    payloads,
    schema_problems,
)
from sqlalchemy import func, select

from mdm.config import Config
from mdm.core.errors import Conflict
from mdm.db.models import Event
from mdm.enroll import service
from mdm.enroll.config import EnrollConfig
from mdm.enroll.profiles import prepare
from mdm.enroll.seams import Env
from mdm.enroll.tables import Enrollment, EnrollmentStatus
from mdm.enroll.validation import identifier_prefix, validate_request
from mdm.ios import enroll_profiles
from mdm.ios import enrollment_profile as ep
from mdm.ios.signing import ProfileSigner, SigningError, sign_profile
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import InternalCASource
from mdm.pki.keys import generate_key
from mdm.pki.tables import IssuedCertificateRecord
from mdm.push.config import ApnsConfig
from mdm.push.topic import TopicError, read_topic, topic_of


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


def _env(config: Config) -> Env:
    ca = CertificateAuthority.load(config.ca_dir)
    return Env(config, ca, InternalCASource(ca), builders=enroll_profiles.builders())


def _pkcs12_spec(ca: CertificateAuthority, encryption: str = "legacy") -> ep.EnrollmentProfileSpec:
    key = generate_key("rsa", 2048)
    cert = ca.issue(key.public_key(), common_name="alice device", days=30, client=True)
    identity = ep.Pkcs12Identity(cert, key, (ca.issuing,), password="s3cret-pw", encryption=encryption)  # type: ignore[arg-type]
    return ep.EnrollmentProfileSpec(
        identifier="com.example.mdm.enrollment.test", profile_uuid=ep.new_uuid(), organization="Example",
        server_url="https://mdm.example.com/mdm/server", checkin_url="https://mdm.example.com/mdm/checkin",
        topic=PUSH_TOPIC, identity=identity, root_certificates=[ca.root],
    )


# ---- structure ----------------------------------------------------------------------------------
def test_profile_matches_apple_schema_and_contract(config: Config) -> None:
    ca = CertificateAuthority.load(config.ca_dir)
    spec = _pkcs12_spec(ca)
    profile = ep.build(spec)
    assert schema_problems(profile) == []
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    assert profile["PayloadIdentifier"] == spec.identifier
    by_type = payloads(profile)
    assert set(by_type) == {"com.apple.security.root", "com.apple.security.pkcs12", "com.apple.mdm"}
    mdm = by_type["com.apple.mdm"]
    assert mdm["IdentityCertificateUUID"] == by_type["com.apple.security.pkcs12"]["PayloadUUID"]
    assert mdm["ServerURL"] == "https://mdm.example.com/mdm/server"
    assert mdm["CheckInURL"] == "https://mdm.example.com/mdm/checkin"
    assert mdm["Topic"] == PUSH_TOPIC
    assert mdm["AccessRights"] == 8191
    assert mdm["SignMessage"] is True and mdm["CheckOutWhenRemoved"] is True
    assert "ServerCapabilities" not in mdm
    root = x509.load_der_x509_certificate(by_type["com.apple.security.root"]["PayloadContent"])
    assert root == ca.root
    uuids = [p["PayloadUUID"] for p in profile["PayloadContent"]] + [profile["PayloadUUID"]]
    identifiers = [p["PayloadIdentifier"] for p in profile["PayloadContent"]]
    assert len(set(uuids)) == len(uuids) and len(set(identifiers)) == len(identifiers)


def test_schema_validator_catches_a_broken_mdm_payload(config: Config) -> None:
    # Guards the guard: the same validator must reject what devices reject.
    profile = ep.build(_pkcs12_spec(CertificateAuthority.load(config.ca_dir)))
    mdm = payloads(profile)["com.apple.mdm"]
    del mdm["Topic"]
    mdm["ServerURL"] = "http://insecure.example.com/mdm/server"
    mdm["AccessRights"] = "8191"
    problems = " | ".join(schema_problems(profile))
    assert "Topic" in problems and "ServerURL" in problems and "AccessRights" in problems


def test_per_user_connections_capability(config: Config) -> None:
    spec = _pkcs12_spec(CertificateAuthority.load(config.ca_dir))
    from dataclasses import replace

    profile = ep.build(replace(spec, per_user_connections=True))
    assert payloads(profile)["com.apple.mdm"]["ServerCapabilities"] == ["com.apple.mdm.per-user-connections"]
    assert schema_problems(profile) == []


def test_scep_profile_matches_schema(config: Config) -> None:
    ca = CertificateAuthority.load(config.ca_dir)
    spec = _pkcs12_spec(ca)
    from dataclasses import replace

    scep = ep.ScepIdentity(url="https://mdm.example.com/scep", challenge="one-time",
                           subject=(("O", "Example"), ("CN", "alice device")))
    profile = ep.build(replace(spec, identity=scep))
    assert schema_problems(profile) == []
    by_type = payloads(profile)
    assert "com.apple.security.pkcs12" not in by_type
    content = by_type["com.apple.security.scep"]["PayloadContent"]
    assert content["URL"] == "https://mdm.example.com/scep" and content["Challenge"] == "one-time"
    assert content["Subject"] == [[["O", "Example"]], [["CN", "alice device"]]]
    scep_uuid = by_type["com.apple.security.scep"]["PayloadUUID"]
    assert by_type["com.apple.mdm"]["IdentityCertificateUUID"] == scep_uuid


# ---- PKCS#12 ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("encryption", "expected"), [("legacy", "pbeWithSHA1And3-KeyTripleDES-CBC"),
                                                       ("aes", "AES-256-CBC")])
def test_pkcs12_opens_with_the_payload_password(config: Config, tmp_path: Path, encryption: str,
                                                expected: str) -> None:
    ca = CertificateAuthority.load(config.ca_dir)
    spec = _pkcs12_spec(ca, encryption)
    payload = payloads(ep.build(spec))["com.apple.security.pkcs12"]
    opened = open_pkcs12(payload)
    assert opened.cert is not None and opened.key is not None
    assert opened.cert.certificate == spec.identity.certificate  # type: ignore[union-attr]
    assert [c.certificate for c in opened.additional_certs] == [ca.issuing]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    assert opened.key.public_key().public_bytes(serialization.Encoding.DER, pub) == \
        opened.cert.certificate.public_key().public_bytes(serialization.Encoding.DER, pub)
    # The openssl CLI agrees about the algorithm (and opens it without the legacy provider).
    p12 = tmp_path / "id.p12"
    p12.write_bytes(payload["PayloadContent"])
    proc = subprocess.run(["openssl", "pkcs12", "-in", str(p12), "-passin", "pass:s3cret-pw", "-info",
                           "-noout"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stderr
    with pytest.raises(ValueError):
        open_pkcs12({**payload, "Password": "wrong"})


# ---- signing ------------------------------------------------------------------------------------
def test_signature_verifies_with_openssl_and_carries_the_chain(config: Config, tmp_path: Path) -> None:
    signer = ProfileSigner.from_slot(config.certs_dir)
    assert len(signer.chain) == 2  # issuing CA and root come with the signature
    body = ep.build_bytes(_pkcs12_spec(CertificateAuthority.load(config.ca_dir)))
    signed = sign_profile(body, signer)
    assert openssl_verify(signed, config.ca_dir / "root.pem", tmp_path) == body  # attached, byte-exact
    # Tampering anywhere in the content breaks it.
    i = signed.index(b"<key>Topic</key>")
    tampered = signed[:i] + b"<key>Topix</key>" + signed[i + 16:]
    assert "verification failure" in openssl_rejects(tampered, config.ca_dir / "root.pem", tmp_path).lower()


def test_signature_does_not_verify_against_another_root(config: Config, tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path / "other-ca")
    signed = sign_profile(b"<plist/>", ProfileSigner.from_slot(config.certs_dir))
    openssl_rejects(signed, tmp_path / "other-ca" / "root.pem", tmp_path)


def test_signer_from_missing_or_mismatched_slot(config: Config, tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="'ios' certificate is missing"):
        ProfileSigner.from_slot(tmp_path / "nowhere")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ios.pem").write_bytes((config.certs_dir / "ios.pem").read_bytes())
    (certs / "ios.key").write_bytes((config.certs_dir / "web.key").read_bytes())
    with pytest.raises(SigningError, match="does not match"):
        ProfileSigner.from_slot(certs)


# ---- APNs topic -----------------------------------------------------------------------------------
def test_topic_from_the_push_certificate(config: Config) -> None:
    topic = read_topic(config)
    assert topic.topic == PUSH_TOPIC
    assert topic.expired  # the fixture expired in 2022


def test_topic_errors(config: Config, tmp_path: Path) -> None:
    config.section(ApnsConfig).certificate_file = ""
    with pytest.raises(TopicError, match=r"configure apns\.certificate_file"):
        read_topic(config)
    config.section(ApnsConfig).certificate_file = str(tmp_path / "missing.pem")
    with pytest.raises(TopicError, match="cannot read"):
        read_topic(config)
    (tmp_path / "junk.pem").write_text("not a certificate")
    config.section(ApnsConfig).certificate_file = str(tmp_path / "junk.pem")
    with pytest.raises(TopicError, match="not a PEM or DER certificate"):
        read_topic(config)
    # A certificate without a com.apple.mgmt UID (e.g. the web TLS certificate) is refused.
    web = x509.load_pem_x509_certificates((config.certs_dir / "web.pem").read_bytes())[0]
    with pytest.raises(TopicError, match="no UID"):
        topic_of(web)
    assert web.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert PUSH_PEM.exists()


# ---- service-level: file delivery and atomicity ----------------------------------------------------
async def test_file_enrollment_records_certificate_and_enrollment_together(
    config: Config, db, tmp_path: Path
) -> None:
    env = _env(config)
    prereq = prepare(env)
    assert any("APNs certificate expired" in w for w in prereq.warnings)
    async with db.transaction() as session:
        created = await service.create_file(env, session, prereq, user="alice", created_by="test")
    assert created.profile is not None and created.user_created
    profile = parse(openssl_verify(created.profile, config.ca_dir / "root.pem", tmp_path))
    assert schema_problems(profile) == []
    identity = open_pkcs12(payloads(profile)["com.apple.security.pkcs12"])
    assert identity.cert is not None
    serial = format(identity.cert.certificate.serial_number, "x")
    async with db.session() as session:
        e = await session.scalar(select(Enrollment))
        assert e is not None
        assert e.status == EnrollmentStatus.DELIVERED.value and e.delivery == "file"
        assert e.cert_serial == serial and e.token_hash is None
        assert e.mdm_profile_identifier == profile["PayloadIdentifier"] == f"localhost.enrollment.{e.uuid}"
        record = await session.scalar(select(IssuedCertificateRecord))
        assert record is not None and record.serial == serial and record.type == "mobile"
        assert record.user_id == e.user_id
        types = sorted((await session.scalars(select(Event.type))).all())
        assert types == ["cert_issued", "enrollment_created"]


async def test_failure_while_building_leaves_nothing(
    config: Config, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(config)
    prereq = prepare(env)

    def broken(*args: object) -> bytes:
        raise RuntimeError("disk full")

    # fault injection after issuance, not the thing tested
    monkeypatch.setattr(enroll_profiles, "_sign", broken)
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await service.create_file(env, session, prereq, user="bob", created_by="test")
    async with db.session() as session:
        for table in (Enrollment, IssuedCertificateRecord, Event):
            assert await session.scalar(select(func.count()).select_from(table)) == 0


def test_prerequisites_name_what_is_missing(config: Config, tmp_path: Path) -> None:
    env = _env(config)
    config.section(ApnsConfig).certificate_file = ""
    with pytest.raises(Conflict, match=r"configure apns\.certificate_file"):
        prepare(env)
    config.section(ApnsConfig).certificate_file = str(PUSH_PEM)
    (config.certs_dir / "ios.pem").unlink()
    with pytest.raises(Conflict, match=r"cannot sign enrollment profiles: .*'ios' certificate is missing"):
        prepare(env)


@pytest.mark.parametrize(("platform", "user", "email", "message"), [
    ("windows", "alice", None, "unknown platform 'windows'"),
    ("ios", "", None, "user must not be empty"),
    ("ios", "   ", None, "user must not be empty"),
    ("ios", "a b", None, "without spaces"),
    ("ios", "alice", "not-an-address", "not an e-mail address"),
    ("ios", "alice", "alice@example.com\r\nBcc: x@evil", "not an e-mail address"),
    ("android", "alice", "a@b@c", "not an e-mail address"),
])
def test_request_validation(platform: str, user: str, email: str | None, message: str) -> None:
    with pytest.raises(Exception, match=message) as info:
        validate_request(platform, user, email)
    assert info.value.status == 400  # type: ignore[attr-defined]


def test_identifier_prefix(config: Config) -> None:
    assert identifier_prefix(config) == "localhost"
    config.hostname = "mdm.corp.example.com"
    assert identifier_prefix(config) == "com.example.corp.mdm"
    config.hostname = "10.0.0.5"
    assert identifier_prefix(config) == "mdm"
    config.section(EnrollConfig).profile_identifier_prefix = "org.acme"
    assert identifier_prefix(config) == "org.acme"


# ---- migration matches the model ----------------------------------------------------------------
async def test_migration_matches_model(db) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mdm.schema import metadata

    def diff(sync_conn: object) -> list[object]:
        ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})  # type: ignore[arg-type]
        return [d for d in compare_metadata(ctx, metadata) if "enrollments" in repr(d)]

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
