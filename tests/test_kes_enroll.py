"""Android enrollment over the wire: ``POST /api/v1/enrollments {"platform": "android"}`` on the
admin listener, the package served once by the web listener (real HTTPS), its QR code read back
with an independent decoder, the SPKI pin checked against what the kes listener really serves,
and the one-time enrollment token as ``mdm.scep.challenges`` sees it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from kes_enroll_support import decode_qr
from sqlalchemy import func, select, update

from mdm.config import Config
from mdm.db.models import Event, User, utcnow
from mdm.enroll.tables import Enrollment
from mdm.pki.tables import IssuedCertificateRecord
from mdm.scep import challenges
from mdm.scep.tables import ScepChallenge
from mdm.server.runtime import Server

PACKAGE_TYPE = "application/vnd.mdm.kes-enrollment+json"
MOBILE = IssuedCertificateRecord.type == "mobile"


# An enrollment code whose QR modules zxing-cpp also read as a Codabar barcode ("B9.A"): about
# one random package in 500 did (CI failed on one: "2 codes in the picture").
CODABAR_LOOKALIKE = (
    '{"v":1,"type":"kes-enrollment","server":{"host":"127.0.0.1","port":40406},"spki_sha256":'
    '"d53615fb20d9ba4f433b9b5e8c231771f59c91ef3e6ab41335974d951aa84ef9","token":'
    '"jckT0-W88lUd5CIsKXdtG4sAI3jZu1KuSD0m2l1Ep_g","url":'
    '"https://127.0.0.1:30406/enroll/jckT0-W88lUd5CIsKXdtG4sAI3jZu1KuSD0m2l1Ep_g"}'
)


def test_the_decoder_reads_the_qr_code_only() -> None:
    """The tests' decoder looks for QR codes, not for any barcode its pixels happen to form."""
    from mdm.enroll import qr

    assert decode_qr(qr.png(CODABAR_LOOKALIKE)) == CODABAR_LOOKALIKE


@pytest.fixture
async def web(server: Server, config: Config) -> Any:
    async with httpx.AsyncClient(verify=client_ssl_context(config), timeout=60) as client:
        yield client


async def create(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/enrollments", json={"platform": "android", "user": "alice", **body})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def local(url: str) -> str:
    return url.replace("localhost", "127.0.0.1")


def pin_of(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def served_pin(server: Server, config: Config) -> str:
    """The pin of the certificate the kes listener presents in a real handshake."""
    port = urlsplit(listener_url(server, "kes", tls=True)).port
    ctx = ssl.create_default_context(cafile=str(config.ca_dir / "root.pem"))
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return pin_of(der)


async def match(db: Any, token: str) -> challenges.ChallengeMatch | None:
    async with db.session() as session:
        return await challenges.match(session, token)


async def count(db: Any, table: Any, *where: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def event_types(db: Any) -> list[str]:
    async with db.session() as session:
        rows = await session.scalars(
            select(Event.type).where(Event.type.like("enrollment%")).order_by(Event.id)
        )
        return list(rows.all())


# ---- the whole path -----------------------------------------------------------------------------
async def test_link_qr_and_package(api: httpx.AsyncClient, web: httpx.AsyncClient, server: Server,
                                   config: Config, db: Any) -> None:
    created = await create(api)
    assert created["platform"] == "android" and created["status"] == "pending"
    assert created["warnings"] == []
    kes_port = urlsplit(listener_url(server, "kes", tls=True)).port
    pin = await served_pin(server, config)

    # The QR code holds the package without its PKCS#12, plus the link, as compact JSON.
    text = decode_qr(base64.b64decode(created["qr_png"]))
    assert " " not in text
    qr = json.loads(text)
    assert set(qr) == {"v", "type", "server", "spki_sha256", "token", "url"}
    assert qr["v"] == 1 and qr["type"] == "kes-enrollment"
    assert qr["server"] == {"host": "localhost", "port": kes_port}
    assert qr["spki_sha256"] == pin
    assert qr["url"] == created["url"]
    token = qr["token"]
    assert len(token) == 32 and int(token, 16) >= 0

    # The token is a one-time challenge for this enrollment, owned by its user, valid until the
    # enrollment expires; neither it nor the link's token is stored in the clear.
    found = await match(db, token)
    assert found is not None and found.problem is None
    assert found.purpose == f"kes-enrollment:{created['id']}"
    async with db.session() as session:
        alice = await session.scalar(select(User).where(User.name == "alice"))
        row = await session.scalar(select(ScepChallenge).where(ScepChallenge.id == found.id))
        enrollment = await session.get(Enrollment, created["id"])
    assert alice is not None and row is not None and enrollment is not None
    assert found.user_id == alice.id
    assert abs(row.expires_at - datetime.fromisoformat(created["expires_at"])) < timedelta(seconds=5)
    assert token.encode() not in row.secret_hash and enrollment.identity == "scep"

    # The link serves the package once.
    r = await web.get(local(created["url"]))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == PACKAGE_TYPE
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Content-Disposition"] == 'attachment; filename="enroll-android.json"'
    package = r.json()
    assert {k: package[k] for k in ("v", "type", "server", "spki_sha256", "token", "user")} == {
        "v": 1, "type": "kes-enrollment", "server": qr["server"], "spki_sha256": pin, "token": token,
        "user": "alice",
    }
    assert datetime.fromisoformat(package["expires_at"]) == datetime.fromisoformat(created["expires_at"])
    assert "pkcs12" not in package
    root = x509.load_pem_x509_certificate((config.ca_dir / "root.pem").read_bytes())
    anchors = [x509.load_pem_x509_certificate(p.encode()) for p in package["ca_certificates"]]
    assert root in anchors
    # The reserve slot's pin travels too (the listener falls back to it).
    reserve = x509.load_pem_x509_certificates((config.certs_dir / "MR.pem").read_bytes())[0]
    assert package["spki_sha256_reserve"] == pin_of(reserve.public_bytes(serialization.Encoding.DER))
    assert package["spki_sha256_reserve"] != pin

    assert await count(db, IssuedCertificateRecord, MOBILE) == 0  # no PKCS#12 asked for
    assert await event_types(db) == ["enrollment_created", "enrollment_downloaded"]
    detail = (await api.get(f"/api/v1/enrollments/{created['id']}")).json()
    assert detail["status"] == "downloaded" and detail["identity"] == "scep"

    again = await web.get(local(created["url"]))
    assert again.status_code == 410 and "already been used" in again.text
    # Downloading does not use the token: the agent redeems it.
    found = await match(db, token)
    assert found is not None and found.problem is None


async def test_package_with_pkcs12(api: httpx.AsyncClient, web: httpx.AsyncClient, db: Any) -> None:
    created = await create(api, pkcs12=True)
    token = json.loads(decode_qr(base64.b64decode(created["qr_png"])))["token"]
    r = await web.get(local(created["url"]))
    assert r.status_code == 200, r.text
    package = r.json()
    assert package["token"] == token
    p12 = package["pkcs12"]
    loaded = pkcs12.load_pkcs12(base64.b64decode(p12["data"]), p12["password"].encode())
    assert loaded.cert is not None and loaded.key is not None
    cert = loaded.cert.certificate
    assert cert.public_key() == loaded.key.public_key()
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == f"alice device {created['id']}"
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(base64.b64decode(p12["data"]), b"wrong password")
    detail = (await api.get(f"/api/v1/enrollments/{created['id']}")).json()
    assert detail["identity"] == "pkcs12" and detail["cert_serial"] == format(cert.serial_number, "x")
    issued = IssuedCertificateRecord.serial == detail["cert_serial"]
    assert await count(db, IssuedCertificateRecord, MOBILE, issued) == 1
    async with db.session() as session:
        body = await session.scalar(select(Event.body).where(Event.type == "enrollment_downloaded"))
    assert body is not None and body["cert_serial"] == detail["cert_serial"] and body["platform"] == "android"


# ---- the token dies with its enrollment ---------------------------------------------------------
async def _token(created: dict[str, Any]) -> str:
    return str(json.loads(decode_qr(base64.b64decode(created["qr_png"])))["token"])


async def test_revoking_ends_the_token(api: httpx.AsyncClient, web: httpx.AsyncClient, db: Any) -> None:
    # A pending link: the link and its token go.
    pending = await create(api)
    token = await _token(pending)
    r = await api.delete(f"/api/v1/enrollments/{pending['id']}")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    found = await match(db, token)
    assert found is not None and found.problem == "expired"
    assert (await web.get(local(pending["url"]))).status_code == 410

    # A package already served, its token not yet redeemed: still revocable, the token ends.
    served = await create(api)
    token = await _token(served)
    assert (await web.get(local(served["url"]))).status_code == 200
    r = await api.delete(f"/api/v1/enrollments/{served['id']}")
    assert r.status_code == 200, r.text
    found = await match(db, token)
    assert found is not None and found.problem == "expired"
    async with db.session() as session:
        bodies = (await session.scalars(select(Event.body).where(Event.type == "enrollment_revoked"))).all()
    assert [b["token_revoked"] for b in bodies] == [True, True]

    # A token the agent redeemed: the enrollment is done, revoking is refused and changes nothing.
    used = await create(api)
    token = await _token(used)
    assert (await web.get(local(used["url"]))).status_code == 200
    found = await match(db, token)
    assert found is not None and found.id is not None
    async with db.transaction() as session:
        assert await challenges.consume(session, found.id)
    r = await api.delete(f"/api/v1/enrollments/{used['id']}")
    assert r.status_code == 409 and "Remove command" in r.json()["error"]["message"]
    assert (await api.get(f"/api/v1/enrollments/{used['id']}")).json()["status"] == "downloaded"
    assert await count(db, Event, Event.type == "enrollment_revoked") == 2


async def test_expired_link_and_token(api: httpx.AsyncClient, web: httpx.AsyncClient, db: Any) -> None:
    created = await create(api)
    token = await _token(created)
    past = utcnow() - timedelta(seconds=1)
    # Time passes: the enrollment and its token expire together (they were made with one expiry).
    async with db.transaction() as session:
        await session.execute(
            update(Enrollment).where(Enrollment.id == created["id"]).values(expires_at=past)
        )
        await session.execute(update(ScepChallenge).values(expires_at=past))
    r = await web.get(local(created["url"]))
    assert r.status_code == 410 and "expired" in r.text
    found = await match(db, token)
    assert found is not None and found.problem == "expired"
    assert (await api.get(f"/api/v1/enrollments/{created['id']}")).json()["status"] == "expired"
    assert await event_types(db) == ["enrollment_created", "enrollment_expired"]


# ---- bad input ----------------------------------------------------------------------------------
async def _nothing_written(db: Any) -> None:
    assert await count(db, Enrollment) == 0
    assert await count(db, User) == 0
    assert await count(db, ScepChallenge) == 0
    assert await event_types(db) == []


async def test_missing_kes_certificate(api: httpx.AsyncClient, web: httpx.AsyncClient, config: Config,
                                       db: Any, tmp_path: Path) -> None:
    made = await create(api)  # while the certificate is there
    cert_path = config.certs_dir / "M.pem"
    kept = tmp_path / "M.pem"
    cert_path.rename(kept)
    try:
        r = await api.post("/api/v1/enrollments", json={"platform": "android", "user": "bob"})
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "conflict" and "slot 'M'" in error["message"]
        assert "mdm certs set -t M" in error["message"]
        # The link made before is not used up by a download that cannot be built.
        got = await web.get(local(made["url"]))
        assert got.status_code == 503 and "slot 'M'" in got.text
    finally:
        kept.rename(cert_path)
    assert await count(db, User, User.name == "bob") == 0
    assert await count(db, Enrollment) == 1
    assert (await web.get(local(made["url"]))).status_code == 200


async def test_bad_requests_write_nothing(api: httpx.AsyncClient, db: Any) -> None:
    cases = [
        ({"email": "a@b@c"}, 400, "not an e-mail address"),
        ({"email": "alice@example.com"}, 409, "smtp.host"),  # no [smtp] in the test configuration
        ({"user": "a b"}, 400, "without spaces"),
        ({"pkcs12": "maybe"}, 400, "pkcs12"),
        ({"device_id": 999_999}, 404, "no device 999999"),
    ]
    for body, status, message in cases:
        r = await api.post("/api/v1/enrollments", json={"platform": "android", "user": "alice", **body})
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["error"]["message"]
    r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "alice", "pkcs12": False})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "pkcs12"
    await _nothing_written(db)


async def test_unknown_and_malformed_links(web: httpx.AsyncClient, server: Server) -> None:
    base = listener_url(server, "web", tls=True)
    assert (await web.get(f"{base}/e/{'A' * 43}")).status_code == 404
    assert (await web.get(f"{base}/e/not-a-token")).status_code == 404
