"""The MDM push certificate: reading PKCS#12 / PEM bundles with clear refusals, `mdm push apns
set-cert` (files, mdm.toml, topic guard), hot renewal (`apply_identity`), the certificate status
and the real (expired) Apple certificate."""

from __future__ import annotations

import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from mdm.cli.main import main
from mdm.config import Config
from mdm.config_sections import load as load_config
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.devfakes.certs import Issued, make_ca, push_certificate
from mdm.push.config import apns_config
from mdm.push.identity import (
    IdentityError,
    apply_identity,
    certificate_status,
    check,
    load_identity,
    read_bundle,
    record_replaced,
)
from mdm.push.topic import read_topic

FIXTURE = Path(__file__).parent / "fixtures" / "apple" / "nanomdm" / "push.pem"
NOW = datetime.now(UTC)
TOPIC = f"com.apple.mgmt.External.{uuid.uuid4()}"


@pytest.fixture(scope="module")
def push_ca() -> Issued:
    return make_ca("test push CA (not Apple)")


@pytest.fixture(scope="module")
def good(push_ca: Issued) -> Issued:
    return push_certificate(push_ca, TOPIC)


def issued(ca: Issued, subject: list[x509.NameAttribute], *, start: datetime, end: datetime) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name(subject)).issuer_name(ca.cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end).sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def p12(item: Issued, password: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(b"push", item.key, item.cert, None, encryption)


def encrypted_key(item: Issued, password: bytes) -> bytes:
    return item.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(password))


# ---- reading bundles ----------------------------------------------------------------------------
def test_pkcs12_with_and_without_password(good: Issued) -> None:
    for password in (b"s3cret", None):
        bundle = read_bundle(p12(good, password), password)
        assert bundle.cert == good.cert
        assert check(bundle, NOW) == TOPIC


def test_pkcs12_wrong_or_missing_password(good: Issued) -> None:
    data = p12(good, b"s3cret")
    with pytest.raises(IdentityError, match="wrong password"):
        read_bundle(data, b"nope")
    with pytest.raises(IdentityError, match="--password"):
        read_bundle(data, None)


def test_pem_pair_plain_and_encrypted(good: Issued, push_ca: Issued) -> None:
    # certificate, chain and key in one file, in any order
    bundle = read_bundle(push_ca.cert_pem + good.key_pem + good.cert_pem, None)
    assert bundle.cert == good.cert and bundle.chain == (push_ca.cert,)
    assert check(bundle, NOW) == TOPIC
    locked = good.cert_pem + encrypted_key(good, b"pw")
    assert check(read_bundle(locked, b"pw"), NOW) == TOPIC
    with pytest.raises(IdentityError, match="encrypted; pass its password"):
        read_bundle(locked, None)
    with pytest.raises(IdentityError, match="wrong password"):
        read_bundle(locked, b"other")


def test_refusals(good: Issued, push_ca: Issued) -> None:
    other = push_certificate(push_ca)
    with pytest.raises(IdentityError, match="does not belong to the certificate"):
        read_bundle(good.cert_pem + other.key_pem, None)
    with pytest.raises(IdentityError, match="holds no private key"):
        read_bundle(good.cert_pem, None)
    with pytest.raises(IdentityError, match="holds no certificate"):
        read_bundle(good.key_pem, None)
    with pytest.raises(IdentityError, match="neither PEM nor a PKCS#12"):
        read_bundle(b"\x00garbage", None)
    no_uid = issued(push_ca, [x509.NameAttribute(NameOID.COMMON_NAME, "web server")],
                    start=NOW - timedelta(days=1), end=NOW + timedelta(days=30))
    with pytest.raises(IdentityError, match="no UID in its subject; is it an MDM push certificate"):
        check(read_bundle(no_uid.cert_pem + no_uid.key_pem, None), NOW)
    expired = issued(push_ca, [x509.NameAttribute(NameOID.USER_ID, TOPIC)],
                     start=NOW - timedelta(days=400), end=NOW - timedelta(days=2))
    bundle = read_bundle(expired.cert_pem + expired.key_pem, None)
    with pytest.raises(IdentityError, match=f"topic {TOPIC}\\) expired on"):
        check(bundle, NOW)
    assert check(bundle, NOW, allow_expired=True) == TOPIC  # a configured one is loaded, reported expired


def test_secrets_are_not_in_messages(good: Issued) -> None:
    with pytest.raises(IdentityError) as info:
        read_bundle(good.cert_pem + encrypted_key(good, b"hunter2-secret"), b"wrong-guess")
    assert "hunter2" not in str(info.value) and "wrong-guess" not in str(info.value)
    assert "PRIVATE" not in repr(load_identity_from(good))


def load_identity_from(item: Issued) -> object:
    from mdm.push.identity import identity_of

    bundle = read_bundle(item.cert_pem + item.key_pem, None)
    return identity_of(bundle, check(bundle, NOW))


def test_real_apple_certificate_topic_and_expiry() -> None:
    cert = x509.load_pem_x509_certificate(FIXTURE.read_bytes())
    from mdm.push.topic import is_development, topic_of

    assert topic_of(cert) == "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
    assert not is_development(cert)  # issued by Apple's CA
    with pytest.raises(IdentityError, match="holds no private key"):  # nanomdm ships no key
        read_bundle(FIXTURE.read_bytes(), None)


# ---- mdm push apns set-cert ---------------------------------------------------------------------
def data_dir(tmp_path: Path, apns: str = "") -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "mdm.toml").write_text(
        '# my deployment\nhostname = "mdm.example.com"\n\n[apns]  # push\n'
        f'# keep this comment\ncertificate_file = "{apns}"\n'
    )
    return d


def set_cert(d: Path, *args: str) -> int:
    return main(["push", "apns", "set-cert", *args, "--data-dir", str(d)])


def test_set_cert_writes_files_and_config(
    tmp_path: Path, good: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    d = data_dir(tmp_path)
    bundle = tmp_path / "push.p12"
    bundle.write_bytes(p12(good, b"pw"))
    (tmp_path / "pw.txt").write_text("pw\n")
    assert set_cert(d, str(bundle), "--password-file", str(tmp_path / "pw.txt")) == 0
    out = capsys.readouterr()
    assert f"topic {TOPIC}" in out.out and "no server runs" in out.out
    assert "pw" not in out.out.replace("push", "").replace("mode", "")  # neither password ...
    assert "PRIVATE" not in out.out + out.err  # ... nor key printed
    for name in ("push.pem", "push.key"):
        assert stat.S_IMODE((d / "apns" / name).stat().st_mode) == 0o600
    text = (d / "mdm.toml").read_text()
    assert "# keep this comment" in text and "# my deployment" in text
    config = load_config(d, env={})
    assert (apns_config(config).certificate_file, apns_config(config).key_file) == \
        ("apns/push.pem", "apns/push.key")
    identity = load_identity(config)
    assert identity.topic == TOPIC and identity.not_after == good.cert.not_valid_after_utc
    assert read_topic(config).topic == TOPIC


def test_set_cert_pem_with_separate_key(tmp_path: Path, good: Issued) -> None:
    d = data_dir(tmp_path)
    (tmp_path / "cert.pem").write_bytes(good.cert_pem)
    (tmp_path / "push.key").write_bytes(encrypted_key(good, b"pw"))
    key = str(tmp_path / "push.key")
    assert set_cert(d, str(tmp_path / "cert.pem"), "--key", key, "--password", "pw") == 0
    assert load_identity(load_config(d, env={})).topic == TOPIC


def test_set_cert_refusals_leave_config_alone(
    tmp_path: Path, good: Issued, push_ca: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    d = data_dir(tmp_path)
    before = (d / "mdm.toml").read_text()
    (tmp_path / "wrong.pem").write_bytes(good.cert_pem + push_certificate(push_ca).key_pem)
    assert set_cert(d, str(tmp_path / "wrong.pem")) == 2
    assert "does not belong to the certificate" in capsys.readouterr().err
    expired = issued(push_ca, [x509.NameAttribute(NameOID.USER_ID, TOPIC)],
                     start=NOW - timedelta(days=400), end=NOW - timedelta(days=2))
    (tmp_path / "old.pem").write_bytes(expired.cert_pem + expired.key_pem)
    assert set_cert(d, str(tmp_path / "old.pem")) == 2
    assert "expired on" in capsys.readouterr().err
    (tmp_path / "locked.p12").write_bytes(p12(good, b"pw"))
    assert set_cert(d, str(tmp_path / "locked.p12"), "--password", "nope") == 2
    assert "wrong password" in capsys.readouterr().err
    assert (d / "mdm.toml").read_text() == before and not (d / "apns").exists()


def test_other_topic_refused_unless_new_topic(
    tmp_path: Path, good: Issued, push_ca: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    d = data_dir(tmp_path)
    (tmp_path / "a.pem").write_bytes(good.cert_pem + good.key_pem)
    assert set_cert(d, str(tmp_path / "a.pem")) == 0
    renewed = push_certificate(push_ca, TOPIC, days=700)  # renewal: same topic, new key
    (tmp_path / "renewed.pem").write_bytes(renewed.cert_pem + renewed.key_pem)
    assert set_cert(d, str(tmp_path / "renewed.pem")) == 0
    other = push_certificate(push_ca)
    other_topic = read_bundle(other.cert_pem + other.key_pem, None)
    (tmp_path / "other.pem").write_bytes(other.cert_pem + other.key_pem)
    capsys.readouterr()
    assert set_cert(d, str(tmp_path / "other.pem")) == 2
    err = capsys.readouterr().err
    assert f"differs from the configured {TOPIC}" in err and "re-enroll" in err and "--new-topic" in err
    assert load_identity(load_config(d, env={})).cert_pem == renewed.cert_pem  # unchanged
    assert set_cert(d, str(tmp_path / "other.pem"), "--new-topic") == 0
    assert load_identity(load_config(d, env={})).topic == check(other_topic, NOW)


# ---- hot renewal ----------------------------------------------------------------------------------
def install(config: Config, item: Issued) -> None:
    path = config.data_path / f"push-{uuid.uuid4().hex}.pem"
    path.write_bytes(item.cert_pem + item.key_pem)
    apns_config(config).certificate_file = str(path)


async def events_of(db: Database, type_: str) -> list[Event]:
    async with db.session() as session:
        return list((await session.scalars(select(Event).where(Event.type == type_))).all())


async def test_apply_identity_same_topic_replaces(config: Config, db: Database, push_ca: Issued) -> None:
    first = push_certificate(push_ca, TOPIC)
    install(config, first)
    current = await apply_identity(None, config, db)
    assert current is not None and current.topic == TOPIC
    assert await apply_identity(current, config, db) is current  # unchanged file: nothing to do
    renewed = push_certificate(push_ca, TOPIC, days=700)
    install(config, renewed)
    new = await apply_identity(current, config, db)
    assert new is not None and new is not current
    assert new.topic == TOPIC and new.not_after == renewed.cert.not_valid_after_utc
    await record_replaced(db, current, new, by="reload")
    (event,) = await events_of(db, "push_certificate_replaced")
    assert event.body["topic"] == TOPIC and event.body["new_not_after"] == new.not_after.isoformat()
    assert await events_of(db, "push_certificate_refused") == []


async def test_apply_identity_other_topic_refused(
    config: Config, db: Database, push_ca: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    install(config, push_certificate(push_ca, TOPIC))
    current = await apply_identity(None, config, db)
    other = push_certificate(push_ca)
    install(config, other)
    assert await apply_identity(current, config, db) is current
    message = next(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert TOPIC in message and "every enrolled iOS device would have to re-enroll" in message
    (event,) = await events_of(db, "push_certificate_refused")
    assert event.body["configured_topic"] == TOPIC and event.body["topic"] != TOPIC
    # an unreadable file is refused too, and the running certificate kept
    Path(apns_config(config).certificate_file).write_bytes(b"garbage")
    assert await apply_identity(current, config, db) is current
    assert len(await events_of(db, "push_certificate_refused")) == 2


def test_certificate_status(good: Issued, push_ca: Issued) -> None:
    identity = load_identity_from(good)
    from mdm.push.types import ApnsIdentity

    assert isinstance(identity, ApnsIdentity)
    status = certificate_status(identity, NOW, "production")
    assert status["topic"] == TOPIC and status["expired"] is False and status["development"] is False
    assert status["days_left"] in (364, 365) and status["environment"] == "production"
    later = certificate_status(identity, identity.not_after + timedelta(seconds=1))
    assert later["expired"] is True and later["days_left"] == 0
    assert certificate_status(None, NOW) == {"configured": False}


def test_development_identity_of_mdm_init_loads(tmp_path: Path) -> None:
    from mdm.push.topic import create_development_identity

    d = data_dir(tmp_path)
    cert_file, topic = create_development_identity(d)
    config = load_config(d, env={})
    apns_config(config).certificate_file = cert_file  # what mdm init writes (the key next to it)
    identity = load_identity(config)
    assert identity.topic == topic and identity.development
    assert certificate_status(identity, NOW)["development"] is True


# A stand-in for `mdm serve` on the data directory: it answers SIGHUP the way the server does
# (run/reload.json with a new sequence number), which is all `mdm reload` relies on.
SERVER = """
import json, os, signal, sys, time
from pathlib import Path
from mdm.server.runfiles import write_reload_status
data = Path(sys.argv[1])
seq = 0
def hup(signum, frame):
    global seq
    seq += 1
    write_reload_status(data, {"pid": os.getpid(), "seq": seq, "config": "applied",
                               "applied": ["apns.certificate_file", "apns.key_file"]})
signal.signal(signal.SIGHUP, hup)
print("ready", flush=True)
time.sleep(60)
"""


def test_set_cert_has_a_running_server_reload(
    tmp_path: Path, good: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys

    d = data_dir(tmp_path)
    (tmp_path / "a.pem").write_bytes(good.cert_pem + good.key_pem)
    command = [sys.executable, "-c", SERVER, str(d)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            (d / "mdm.pid").write_text(f"{server.pid}\n")
            assert set_cert(d, str(tmp_path / "a.pem")) == 0
            out = capsys.readouterr().out
            assert f"asking the running server (pid {server.pid}) to reload" in out
            assert "reloaded; applied: apns.certificate_file, apns.key_file" in out
        finally:
            server.kill()


def test_apple_certificate_replaces_the_development_identity(
    tmp_path: Path, good: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's steps: `mdm init`'s development identity, then `set-cert` without --new-topic."""
    from mdm.push.topic import create_development_identity

    d = data_dir(tmp_path)
    cert_file, dev_topic = create_development_identity(d)
    text = (d / "mdm.toml").read_text().replace('certificate_file = ""', f'certificate_file = "{cert_file}"')
    (d / "mdm.toml").write_text(text)
    (tmp_path / "apple.pem").write_bytes(good.cert_pem + good.key_pem)
    assert set_cert(d, str(tmp_path / "apple.pem")) == 0
    assert f"replaced the development identity's topic {dev_topic}" in capsys.readouterr().out
    assert load_identity(load_config(d, env={})).topic == TOPIC


async def test_apply_identity_replaces_the_development_identity(
    config: Config, db: Database, push_ca: Issued
) -> None:
    from mdm.push.topic import create_development_identity

    apns_config(config).certificate_file, _ = create_development_identity(config.data_path)
    current = await apply_identity(None, config, db)
    assert current is not None and current.development
    install(config, push_certificate(push_ca, TOPIC))
    new = await apply_identity(current, config, db)
    assert new is not None and new.topic == TOPIC and not new.development
    assert await events_of(db, "push_certificate_refused") == []
