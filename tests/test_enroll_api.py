"""Enrollment over the wire: ``POST /api/v1/enrollments`` on the admin listener, the one-time link
on the web listener (real HTTPS and HTTP), the profile checked with openssl and Apple's schema."""

from __future__ import annotations

import asyncio
import base64
import io
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import segno
from conftest import client_ssl_context, listener_url
from enroll_support import (
    APNS_TOML,
    PUSH_TOPIC,
    open_pkcs12,
    openssl_verify,
    parse,
    payloads,
    schema_problems,
)
from sqlalchemy import func, select, update

from mdm.config import Config
from mdm.core import tokens
from mdm.db.models import Event, User, utcnow
from mdm.enroll import attach, download, expiry
from mdm.enroll.seams import env_of
from mdm.enroll.tables import Enrollment
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.runtime import Server

PROFILE_TYPE = "application/x-apple-aspen-config"
# Server start records the listener certificates; device identities are the "mobile" ones.
MOBILE = IssuedCertificateRecord.type == "mobile"


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


@pytest.fixture
async def web(server: Server, config: Config) -> Any:
    async with httpx.AsyncClient(verify=client_ssl_context(config), timeout=60,
                                 limits=httpx.Limits(max_connections=100)) as client:
        yield client


# The test configuration trusts 127.0.0.2 as a TLS-terminating proxy of the web listener.
PROXIED_TLS = {"X-Forwarded-Proto": "https"}


def _proxy() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"), timeout=60,
                             limits=httpx.Limits(max_connections=100))


async def _create(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "alice", **body})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def _count(db: Any, table: Any, *where: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


# The server's own alerts (the expired APNs certificate of the test data) are not the request's.
NOT_SERVER_ALERTS = (Event.type.notlike("push_certificate%") & Event.type.notlike("service_%")
                     & Event.type.notlike("admin_action%"))  # the audit: tests/test_audit.py


async def _event_types(db: Any) -> list[str]:
    async with db.session() as session:
        rows = await session.scalars(select(Event.type).where(NOT_SERVER_ALERTS).order_by(Event.id))
        return list(rows.all())


# ---- the whole path -----------------------------------------------------------------------------
async def test_create_download_once(api: httpx.AsyncClient, web: httpx.AsyncClient, server: Server,
                                    config: Config, db: Any, tmp_path: Path) -> None:
    created = await _create(api)
    assert created["user"] == "alice" and created["user_created"] is True
    assert created["status"] == "pending" and created["email"] is None
    assert any("APNs certificate expired" in w for w in created["warnings"])
    # The URL points at the web listener's HTTPS port under /e/ with a 256-bit token.
    url = urlsplit(created["url"])
    web_port = urlsplit(listener_url(server, "web", tls=True)).port
    assert (url.scheme, url.hostname, url.port) == ("https", "localhost", web_port)
    token = url.path.removeprefix("/e/")
    assert url.path.startswith("/e/") and len(base64.urlsafe_b64decode(token + "=")) == 32
    # qr_png is a PNG of exactly that URL (segno is deterministic: re-encode and compare).
    png = base64.b64decode(created["qr_png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    again = io.BytesIO()
    segno.make(created["url"], error="m").save(again, kind="png", scale=6, border=4)
    assert png == again.getvalue()
    # Only the hash of the token is stored.
    async with db.session() as session:
        row = await session.get(Enrollment, created["id"])
        assert row is not None and row.token_hash is not None and token.encode() not in row.token_hash
        assert row.cert_serial is None  # nothing issued before the download

    r = await web.get(created["url"].replace("localhost", "127.0.0.1"))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == PROFILE_TYPE
    assert r.headers["Cache-Control"] == "no-store"
    profile = parse(openssl_verify(r.content, config.ca_dir / "root.pem", tmp_path))
    assert schema_problems(profile) == []
    by_type = payloads(profile)
    ios_port = urlsplit(listener_url(server, "ios", tls=True)).port
    mdm = by_type["com.apple.mdm"]
    assert mdm["ServerURL"] == f"https://localhost:{ios_port}/mdm/server"
    assert mdm["CheckInURL"] == f"https://localhost:{ios_port}/mdm/checkin"
    assert mdm["Topic"] == PUSH_TOPIC
    assert mdm["IdentityCertificateUUID"] == by_type["com.apple.security.pkcs12"]["PayloadUUID"]
    assert mdm["AccessRights"] == 8191 and mdm["SignMessage"] is True and mdm["CheckOutWhenRemoved"] is True
    identity = open_pkcs12(by_type["com.apple.security.pkcs12"])
    assert identity.cert is not None

    detail = (await api.get(f"/api/v1/enrollments/{created['id']}")).json()
    assert detail["status"] == "downloaded" and detail["downloaded_at"]
    assert detail["cert_serial"] == format(identity.cert.certificate.serial_number, "x")
    assert detail["mdm_profile_identifier"] == profile["PayloadIdentifier"]
    issued = IssuedCertificateRecord.serial == detail["cert_serial"]
    assert await _count(db, IssuedCertificateRecord, issued) == 1
    assert await _event_types(db) == ["enrollment_created", "cert_issued", "enrollment_downloaded"]

    second = await web.get(created["url"].replace("localhost", "127.0.0.1"))
    assert second.status_code == 410
    assert "already been used" in second.text
    # Also over the plain-HTTP port (8060) behind a TLS-terminating trusted proxy: same path, same
    # answer. Straight to that port it is refused before the link is looked at (profiles need TLS).
    async with _proxy() as proxy:
        plain = await proxy.get(listener_url(server, "web", tls=False) + url.path, headers=PROXIED_TLS)
    assert plain.status_code == 410
    assert (await web.get(listener_url(server, "web", tls=False) + url.path)).status_code == 403
    assert await _count(db, IssuedCertificateRecord, MOBILE) == 1


async def test_unknown_and_malformed_tokens(web: httpx.AsyncClient, server: Server) -> None:
    base = listener_url(server, "web", tls=True)
    for path in ("/e/" + "A" * 43, "/e/short", "/e/" + "%00" * 10, "/e/" + "x" * 5000):
        r = await web.get(base + path)
        assert r.status_code in (404, 414, 400), path
        assert r.status_code != 500


async def test_head_does_not_consume(api: httpx.AsyncClient, web: httpx.AsyncClient, db: Any) -> None:
    link = (await _create(api))["url"].replace("localhost", "127.0.0.1")
    assert (await web.head(link)).status_code == 405
    assert (await web.get(link)).status_code == 200


@pytest.mark.parametrize("n", [40])
async def test_concurrent_downloads_exactly_one_succeeds(api: httpx.AsyncClient, web: httpx.AsyncClient,
                                                        server: Server, db: Any, n: int) -> None:
    link = (await _create(api))["url"].replace("localhost", "127.0.0.1")
    plain = listener_url(server, "web", tls=False) + urlsplit(link).path
    async with _proxy() as proxy:  # over both web ports at once (plain HTTP behind a trusted proxy)
        answers = await asyncio.gather(
            *(web.get(link) if i % 2 else proxy.get(plain, headers=PROXIED_TLS) for i in range(n))
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [410] * (n - 1), statuses
    assert await _count(db, IssuedCertificateRecord, MOBILE) == 1
    assert (await _event_types(db)).count("enrollment_downloaded") == 1


# ---- expiry and revocation ----------------------------------------------------------------------
async def test_expired_link(api: httpx.AsyncClient, web: httpx.AsyncClient, db: Any) -> None:
    created = await _create(api)
    async with db.transaction() as session:
        await session.execute(update(Enrollment).values(expires_at=utcnow() - timedelta(seconds=1)))
    listed = (await api.get("/api/v1/enrollments")).json()["items"]
    assert listed[0]["status"] == "expired"  # shown as expired before the worker runs
    link = created["url"].replace("localhost", "127.0.0.1")
    for _ in range(2):
        r = await web.get(link)
        assert r.status_code == 410 and "expired" in r.text
    assert (await _event_types(db)).count("enrollment_expired") == 1
    assert await _count(db, IssuedCertificateRecord, MOBILE) == 0
    assert (await api.get(f"/api/v1/enrollments/{created['id']}")).json()["status"] == "expired"


async def test_expiry_sweep(db: Any, api: httpx.AsyncClient) -> None:
    ids = [(await _create(api, user=f"u{i}"))["id"] for i in range(3)]
    async with db.transaction() as session:
        await session.execute(update(Enrollment).where(Enrollment.id != ids[2])
                              .values(expires_at=utcnow() - timedelta(minutes=1)))
    async with db.transaction() as session:
        assert await expiry.expire_due(session) == 2
    async with db.transaction() as session:
        assert await expiry.expire_due(session) == 0
    statuses = [e["status"] for e in (await api.get("/api/v1/enrollments")).json()["items"]]
    assert statuses == ["expired", "expired", "pending"]
    assert (await _event_types(db)).count("enrollment_expired") == 2


async def test_revoke(api: httpx.AsyncClient, web: httpx.AsyncClient, db: Any) -> None:
    created = await _create(api)
    r = await api.delete(f"/api/v1/enrollments/{created['id']}")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    link = created["url"].replace("localhost", "127.0.0.1")
    r = await web.get(link)
    assert r.status_code == 410 and "revoked" in r.text
    r = await api.delete(f"/api/v1/enrollments/{created['id']}")
    assert r.status_code == 409 and r.json()["error"]["details"]["enrollment_status"] == "revoked"
    used = await _create(api, user="bob")
    assert (await web.get(used["url"].replace("localhost", "127.0.0.1"))).status_code == 200
    r = await api.delete(f"/api/v1/enrollments/{used['id']}")
    assert r.status_code == 409 and "Remove command" in r.json()["error"]["message"]
    assert (await api.delete("/api/v1/enrollments/999999")).status_code == 404
    assert (await _event_types(db)).count("enrollment_revoked") == 1


# ---- administration -----------------------------------------------------------------------------
async def test_list_filter_and_existing_user(api: httpx.AsyncClient, db: Any) -> None:
    first = await _create(api)
    second = await _create(api)
    assert second["user_created"] is False
    await _create(api, user="bob")
    assert await _count(db, User) == 2
    page = (await api.get("/api/v1/enrollments", params={"limit": 2})).json()
    assert [e["id"] for e in page["items"]] == [first["id"], second["id"]] and page["next_cursor"]
    rest = (await api.get("/api/v1/enrollments", params={"cursor": page["next_cursor"]})).json()
    assert [e["user"] for e in rest["items"]] == ["bob"] and rest["next_cursor"] is None
    alice = (await api.get("/api/v1/enrollments", params={"user": "alice"})).json()["items"]
    assert {e["user"] for e in alice} == {"alice"} and len(alice) == 2
    assert (await api.get("/api/v1/enrollments", params={"status": "bogus"})).status_code == 400


async def test_scope(api: httpx.AsyncClient, db: Any) -> None:
    async with db.transaction() as session:
        _, reader = await tokens.create(session, "reader", ["devices:read"])
        _, enroller = await tokens.create(session, "enroller", ["enroll"])
    body = {"platform": "ios", "user": "alice"}
    r = await api.post("/api/v1/enrollments", json=body, headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 403
    r = await api.post("/api/v1/enrollments", json=body, headers={"Authorization": f"Bearer {enroller}"})
    assert r.status_code == 201
    assert (await api.get(f"/api/v1/enrollments/{r.json()['id']}")).json()["created_by"] == "enroller"


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"platform": "ios", "user": "alice", "pkcs12": True}, 400, "android enrollments only"),
    ({"platform": "android", "user": "alice", "pkcs12": "maybe"}, 400, "pkcs12"),
    ({"platform": "windows", "user": "alice"}, 400, "platform: Input should be 'ios' or 'android'"),
    ({"platform": "ios", "user": ""}, 400, "user must not be empty"),
    ({"platform": "ios", "user": "a/b"}, 400, "without spaces"),
    ({"platform": "ios", "user": "alice", "email": "nope"}, 400, "not an e-mail address"),
    ({"platform": "ios", "user": "alice", "email": "alice@example.com"}, 409, "smtp.host"),
    ({"platform": "ios"}, 400, "user"),
    ({"platform": "ios", "user": "alice", "extra": 1}, 400, "extra"),
    ({"platform": "ios", "user": ["alice"]}, 400, "user"),
])
async def test_bad_input_writes_nothing(api: httpx.AsyncClient, db: Any, body: dict[str, Any], status: int,
                                        message: str) -> None:
    r = await api.post("/api/v1/enrollments", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    tables = ((Enrollment,), (User,), (IssuedCertificateRecord, MOBILE), (Event, NOT_SERVER_ALERTS))
    for table, *where in tables:
        assert await _count(db, table, *where) == 0


@pytest.mark.parametrize("extra_config", [""])
async def test_missing_apns_certificate(api: httpx.AsyncClient, db: Any) -> None:
    r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "alice"})
    assert r.status_code == 409
    assert "configure apns.certificate_file" in r.json()["error"]["message"]
    assert await _count(db, Enrollment) == 0 and await _count(db, User) == 0


async def test_missing_ios_certificate(api: httpx.AsyncClient, web: httpx.AsyncClient, config: Config,
                                       db: Any) -> None:
    created = await _create(api)
    pem = config.certs_dir / "ios.pem"
    saved = pem.read_bytes()
    pem.unlink()
    r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "bob"})
    assert r.status_code == 409 and "'ios' certificate is missing" in r.json()["error"]["message"]
    # A link created earlier cannot be built now: 503, nothing issued, and the link survives.
    link = created["url"].replace("localhost", "127.0.0.1")
    r = await web.get(link)
    assert r.status_code == 503 and "try again later" in r.text.lower()
    assert await _count(db, IssuedCertificateRecord, MOBILE) == 0
    assert "enrollment_download_failed" in await _event_types(db)
    pem.write_bytes(saved)
    assert (await web.get(link)).status_code == 200
    assert await _count(db, Enrollment) == 1


@pytest.mark.parametrize("extra_config", [APNS_TOML + '\n[enroll]\nidentity = "scep"\n'
                                          'access_rights = 4095\nper_user_connections = true\n'])
async def test_scep_identity(api: httpx.AsyncClient, web: httpx.AsyncClient, server: Server, config: Config,
                             db: Any, tmp_path: Path) -> None:
    from mdm.scep import challenges

    created = await _create(api)
    r = await web.get(created["url"].replace("localhost", "127.0.0.1"))
    assert r.status_code == 200, r.text
    profile = parse(openssl_verify(r.content, config.ca_dir / "root.pem", tmp_path))
    assert schema_problems(profile) == []
    by_type = payloads(profile)
    assert "com.apple.security.pkcs12" not in by_type
    scep = by_type["com.apple.security.scep"]
    ios_port = urlsplit(listener_url(server, "ios", tls=True)).port
    assert scep["PayloadContent"]["URL"] == f"https://localhost:{ios_port}/scep"
    mdm = by_type["com.apple.mdm"]
    assert mdm["IdentityCertificateUUID"] == scep["PayloadUUID"]
    assert mdm["AccessRights"] == 4095
    assert mdm["ServerCapabilities"] == ["com.apple.mdm.per-user-connections"]
    async with db.session() as session:
        match = await challenges.match(session, scep["PayloadContent"]["Challenge"])
        user_id = await session.scalar(select(User.id).where(User.name == "alice"))
    assert match is not None and match.problem is None
    assert match.user_id == user_id and match.purpose == f"ios-enrollment:{created['id']}"
    assert await _count(db, IssuedCertificateRecord, MOBILE) == 0  # the device gets its certificate over SCEP


async def test_attach_device_for_checkin(api: httpx.AsyncClient, web: httpx.AsyncClient, db: Any,
                                         config: Config, tmp_path: Path) -> None:
    created = await _create(api)
    r = await web.get(created["url"].replace("localhost", "127.0.0.1"))
    profile = parse(openssl_verify(r.content, config.ca_dir / "root.pem", tmp_path))
    serial = open_pkcs12(payloads(profile)["com.apple.security.pkcs12"]).cert
    assert serial is not None
    async with db.transaction() as session:
        e = await attach.attach_device(session, device_id=77, cert_serial=serial.certificate.serial_number)
        assert e is not None and e.id == created["id"] and e.mdm_profile_identifier
    async with db.transaction() as session:
        assert await attach.attach_device(session, device_id=78, cert_serial=12345) is None
    assert (await api.get(f"/api/v1/enrollments/{created['id']}")).json()["device_id"] == 77



@pytest.mark.parametrize(("raw", "content_type", "status"), [
    (b"not json", "application/json", 400),
    (b"[]", "application/json", 400),
    (b"null", "application/json", 400),
    (b'{"platform": "ios", "user": "alice"}', "text/plain", 415),
    (b'{"platform": 1, "user": "alice"}', "application/json", 400),
    (b'{"platform": "ios", "user": 12}', "application/json", 400),
    (b'{"platform": "ios", "user": "' + b"a" * 300 + b'"}', "application/json", 400),
    (b'{"platform": "ios", "user": "al\\u0000ice"}', "application/json", 400),
    (b'{"platform": "ios", "user": "alice", "email": ""}', "application/json", 400),
    (b'{"platform": "ios", "user": "alice", "email": "\\u00e9@\\u00e9"}', "application/json", 400),
    (b'{"platform": "ios\\u0000", "user": "alice"}', "application/json", 400),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, "application/json", 400),
    (b"\xff\xfe\x00garbage", "application/json", 400),
])
async def test_hostile_bodies(api: httpx.AsyncClient, db: Any, raw: bytes, content_type: str,
                              status: int) -> None:
    r = await api.post("/api/v1/enrollments", content=raw, headers={"Content-Type": content_type})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"]
    assert await _count(db, Enrollment) == 0 and await _count(db, User) == 0


@pytest.mark.parametrize("n", [30])
async def test_database_claim_is_atomic_across_replicas(api: httpx.AsyncClient, server: Server, db: Any,
                                                        n: int) -> None:
    """The per-process guard is bypassed here (as with several replicas on one database): the
    conditional UPDATE alone must let exactly one builder through."""
    from mdm.enroll import links

    created = await _create(api)
    token = urlsplit(created["url"]).path.removeprefix("/e/")
    env = env_of(server.ctx)
    answers = await asyncio.gather(
        *(download.build_download(env, db, links.token_hash(token), created["id"], None) for _ in range(n)),
        return_exceptions=True,
    )
    profiles = [a for a in answers if isinstance(a, bytes)]
    gone = [a for a in answers if isinstance(a, download.LinkGone)]
    assert len(profiles) == 1 and len(gone) == n - 1, [type(a) for a in answers]
    assert await _count(db, IssuedCertificateRecord, MOBILE) == 1
    assert (await _event_types(db)).count("enrollment_downloaded") == 1
