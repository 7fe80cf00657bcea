"""Certificate life cycle through the admin API and the CLI: issue per rule (generated key as
PKCS#12, or a CSR), list, show, revoke; events; the CRL on the web listener and the distribution
point that names it; revocations made elsewhere picked up by the refresh worker."""

from __future__ import annotations

import asyncio
import base64
import stat
from datetime import UTC, datetime

import httpx
import pytest
from conftest import listener_url
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki_support import cli
from sqlalchemy import select, update

from mdm.core import tokens
from mdm.db.models import Event, User
from mdm.pki import services as pki_services
from mdm.pki import services as plugin
from mdm.pki.tables import IssuedCertificateRecord
from mdm.pki.trust import IdentityRejected


@pytest.fixture
def extra_config() -> str:
    return "[pki]\nrevocation_refresh_seconds = 0.5\n"


async def add_user(db, name: str = "alice", email: str | None = "alice@example.com") -> int:
    async with db.transaction() as session:
        user = User(name=name, email=email)
        session.add(user)
        await session.flush()
        return user.id


async def events_of(db, type_: str) -> list[Event]:
    async with db.session() as session:
        return list(
            (await session.scalars(select(Event).where(Event.type == type_).order_by(Event.id))).all()
        )


def csr_for(key, cn: str = "device") -> str:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


async def test_issue_with_generated_key_returns_a_pkcs12(api: httpx.AsyncClient, server, db) -> None:
    await add_user(db)
    r = await api.post("/api/v1/certificates", json={"user": "alice", "type": "mobile", "p12_password": "pw"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["pkcs12"] and not body["user_created"]
    container = pkcs12.load_pkcs12(base64.b64decode(body["pkcs12"]), b"pw")
    cert = container.cert.certificate
    assert cert.public_bytes(serialization.Encoding.PEM).decode() == body["certificate_pem"]
    assert [c.certificate for c in container.additional_certs] == pki_services.ca(server.ctx).chain
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert cert.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value == "alice"
    assert (
        ExtendedKeyUsageOID.CLIENT_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    assert isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().key_size == 2048
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 364 <= days <= 366  # the default mobile rule
    assert len(format(cert.serial_number, "x")) == 32  # 128-bit serial
    out = body["certificate"]
    assert (
        out["serial"] == format(cert.serial_number, "x")
        and out["status"] == "valid"
        and out["user"] == "alice"
    )
    issued = await events_of(db, "cert_issued")
    assert [e.body["serial"] for e in issued] == [out["serial"]]

    # the CRL distribution point names the CRL that the web listener serves
    dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = dp[0].full_name[0].value
    web = listener_url(server, "web", tls=False)
    assert url == f"http://localhost:{web.rsplit(':', 1)[1]}/crl/issuing.crl"
    async with httpx.AsyncClient() as plain:
        crl_response = await plain.get(url.replace("localhost", "127.0.0.1"))
    assert crl_response.status_code == 200
    assert crl_response.headers["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(crl_response.content)
    assert crl.is_signature_valid(pki_services.ca(server.ctx).issuing.public_key())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is None


async def test_issue_follows_the_rule_and_certifies_a_csr(api: httpx.AsyncClient, db) -> None:
    await add_user(db)
    r = await api.put(
        "/api/v1/certificates/rules/vpn", json={"key_type": "ec", "validity_days": 30, "renewal_days": 7}
    )
    assert r.status_code == 200, r.text
    r = await api.post("/api/v1/certificates", json={"user": "alice", "type": "vpn", "p12_password": "pw"})
    assert r.status_code == 201, r.text
    cert = x509.load_pem_x509_certificate(r.json()["certificate_pem"].encode())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert 29 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 30

    key = ec.generate_private_key(ec.SECP256R1())
    r = await api.post("/api/v1/certificates", json={"user": "alice", "type": "mobile", "csr": csr_for(key)})
    assert r.status_code == 201, r.text
    assert r.json()["pkcs12"] is None
    cert = x509.load_pem_x509_certificate(r.json()["certificate_pem"].encode())
    assert cert.public_key() == key.public_key()


async def test_mail_certificates_carry_the_address(api: httpx.AsyncClient, db) -> None:
    await add_user(db, "bob", None)
    r = await api.post("/api/v1/certificates", json={"user": "bob", "type": "mail", "p12_password": "pw"})
    assert r.status_code == 400 and "has none" in r.json()["error"]["message"]
    r = await api.post(
        "/api/v1/certificates",
        json={"user": "bob", "type": "mail", "p12_password": "pw", "email": "bob@example.com"},
    )
    assert r.status_code == 201, r.text
    cert = x509.load_pem_x509_certificate(r.json()["certificate_pem"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["bob@example.com"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku


async def test_issue_bad_input(api: httpx.AsyncClient, db) -> None:
    await add_user(db)
    cases = [
        (
            {"user": "nobody", "type": "mobile", "p12_password": "pw"},
            404,
            "no user 'nobody'; create it first",
        ),
        ({"user": "alice", "type": "mobile", "p12_password": ""}, 400, "p12_password"),
        ({"user": "alice", "type": "server", "p12_password": "pw"}, 400, "type"),
        (
            {
                "user": "alice",
                "type": "mobile",
                "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----",
            },
            400,
            "csr: not a PKCS#10",
        ),
        ({"user": "alice", "type": "mobile", "csr": "bm90IGEgY3Ny"}, 400, "csr: not a PKCS#10"),
        (
            {
                "user": "alice",
                "type": "mobile",
                "csr": csr_for(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            },
            400,
            "too weak",
        ),
        ({"user": "alice", "type": "mobile", "p12_password": "pw", "extra": 1}, 400, "extra"),
    ]
    for body, status, message in cases:
        r = await api.post("/api/v1/certificates", json=body)
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["error"]["message"], (body, r.text)
    async with db.session() as session:
        assert (
            await session.scalars(
                select(IssuedCertificateRecord).where(IssuedCertificateRecord.type != "server")
            )
        ).all() == []
    r = await api.post(
        "/api/v1/certificates",
        json={"user": "carol", "type": "vpn", "p12_password": "pw", "create_user": True},
    )
    assert r.status_code == 201 and r.json()["user_created"]


async def test_list_show_revoke(api: httpx.AsyncClient, db, server) -> None:
    await add_user(db)
    await add_user(db, "bob", None)
    serials = []
    for user, type_ in (("alice", "mobile"), ("alice", "vpn"), ("bob", "mobile")):
        r = await api.post("/api/v1/certificates", json={"user": user, "type": type_, "p12_password": "pw"})
        serials.append(r.json()["certificate"]["serial"])
    r = await api.get("/api/v1/certificates", params={"user": "alice"})
    assert [c["serial"] for c in r.json()["items"]] == serials[1::-1]
    r = await api.get("/api/v1/certificates", params={"type": "mobile", "limit": 1})
    page = r.json()
    assert [c["serial"] for c in page["items"]] == [serials[2]] and page["next_cursor"]
    r = await api.get(
        "/api/v1/certificates", params={"type": "mobile", "limit": 1, "cursor": page["next_cursor"]}
    )
    assert [c["serial"] for c in r.json()["items"]] == [serials[0]]
    servers = (await api.get("/api/v1/certificates", params={"type": "server"})).json()["items"]
    assert {c["subject"] for c in servers} == {"CN=localhost,O=mdm"}  # recorded at start-up
    assert len(servers) == 6

    r = await api.get(f"/api/v1/certificates/{serials[0].upper()}")
    assert r.status_code == 200 and r.json()["pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert (await api.get("/api/v1/certificates/abc123")).status_code == 404
    assert (await api.get("/api/v1/certificates/not-hex")).status_code == 404

    r = await api.post(f"/api/v1/certificates/{serials[0]}/revoke", json={"reason": "key_compromise"})
    assert r.status_code == 200 and r.json()["revocation_reason"] == "key_compromise"
    r = await api.post(f"/api/v1/certificates/{serials[0]}/revoke", json={"reason": "key_compromise"})
    assert r.status_code == 409 and "already revoked" in r.json()["error"]["message"]
    r = await api.post(f"/api/v1/certificates/{serials[1]}/revoke", json={"reason": "certificate_hold"})
    assert r.status_code == 400
    r = await api.post("/api/v1/certificates/abcdef/revoke", json={})
    assert r.status_code == 404
    assert [
        c["serial"]
        for c in (await api.get("/api/v1/certificates", params={"status": "revoked"})).json()["items"]
    ] == [serials[0]]
    revoked = await events_of(db, "cert_revoked")
    assert [(e.body["serial"], e.body["reason"], e.severity) for e in revoked] == [
        (serials[0], "key_compromise", "warning")
    ]

    async with httpx.AsyncClient() as plain:
        der = (await plain.get(listener_url(server, "web", tls=False) + "/crl/issuing.crl")).content
    crl = x509.load_der_x509_crl(der)
    entry = crl.get_revoked_certificate_by_serial_number(int(serials[0], 16))
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert crl.get_revoked_certificate_by_serial_number(int(serials[1], 16)) is None
    assert crl.next_update_utc > datetime.now(UTC)


async def test_revocation_made_elsewhere_is_picked_up(server, db, api: httpx.AsyncClient) -> None:
    await add_user(db)
    r = await api.post("/api/v1/certificates", json={"user": "alice", "type": "mobile", "p12_password": "pw"})
    serial = r.json()["certificate"]["serial"]
    cert = x509.load_pem_x509_certificate(r.json()["certificate_pem"].encode())
    verifier = plugin.verifier(server.ctx)
    verifier.verify(cert)
    # another replica (or a script) revokes it in the shared database
    async with db.transaction() as session:
        await session.execute(
            update(IssuedCertificateRecord)
            .where(IssuedCertificateRecord.serial == serial)
            .values(status="revoked", revoked_at=datetime.now(UTC), revocation_reason="superseded")
        )
    for _ in range(100):
        if serial in verifier.revoked:
            break
        await asyncio.sleep(0.1)
    with pytest.raises(IdentityRejected):
        verifier.verify(cert)
    crl = x509.load_der_x509_crl(plugin.revocation(server.ctx).crl_der or b"")
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None


async def test_pki_scope_required(api: httpx.AsyncClient, db) -> None:
    async with db.transaction() as session:
        _, reader = await tokens.create(session, "reader", ["devices:read"])
        _, pki = await tokens.create(session, "pki-admin", ["pki"])
    r = await api.get("/api/v1/certificates", headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 403 and "pki" in r.json()["error"]["message"]
    r = await api.get("/api/v1/certificates/rules", headers={"Authorization": f"Bearer {pki}"})
    assert r.status_code == 200


# ---- the CLI --------------------------------------------------------------------------------------
async def test_cli_issue_list_show_revoke(server, config, admin_token: str, db, tmp_path) -> None:
    conn = [
        "--url",
        listener_url(server, "admin"),
        "--token",
        admin_token,
        "--data-dir",
        str(config.data_path),
    ]
    r = await cli(
        "certs",
        "issue",
        "--user",
        "dave",
        "--type",
        "mobile",
        "--p12",
        str(tmp_path / "d.p12"),
        "--password",
        "pw",
        *conn,
    )
    assert r.code == 1 and "no user 'dave'" in r.err and "--create-user" in r.err
    r = await cli(
        "certs",
        "issue",
        "--user",
        "dave",
        "--type",
        "mobile",
        "--p12",
        str(tmp_path / "d.p12"),
        "--password",
        "pw",
        "--create-user",
        *conn,
    )
    assert r.code == 0, r.err
    assert "created user dave" in r.err
    p12_file = tmp_path / "d.p12"
    assert stat.S_IMODE(p12_file.stat().st_mode) == 0o600
    cert = pkcs12.load_pkcs12(p12_file.read_bytes(), b"pw").cert.certificate
    serial = format(cert.serial_number, "x")
    assert f"serial:      {serial}" in r.out

    r = await cli("certs", "issue", "--user", "dave", "--type", "vpn", *conn)
    assert r.code == 2 and "give --p12 FILE" in r.err

    r = await cli("certs", "list", "--user", "dave", *conn)
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0].split()[:3] == ["SERIAL", "TYPE", "STATUS"] and lines[1].split()[:4] == [
        serial,
        "mobile",
        "valid",
        "dave",
    ]

    r = await cli("certs", "show", serial, "--pem", *conn)
    assert r.code == 0 and x509.load_pem_x509_certificate(r.out.encode()) == cert

    r = await cli("certs", "revoke", serial, "--reason", "wrongReason", *conn)
    assert r.code == 2 and "RFC 5280 reasons are" in r.err
    r = await cli("certs", "revoke", "zz", *conn)
    assert r.code == 2 and "must be hexadecimal" in r.err
    r = await cli("certs", "revoke", serial, "--reason", "keyCompromise", *conn)
    assert r.code == 0, r.err
    assert f"revoked {serial}" in r.out
    with pytest.raises(IdentityRejected):
        plugin.verifier(server.ctx).verify(cert)
    r = await cli("certs", "revoke", serial, "--reason", "key_compromise", *conn)
    assert r.code == 1 and "409 conflict: certificate" in r.err and "already revoked" in r.err
    r = await cli("certs", "list", "--status", "revoked", "--json", *conn)
    assert r.code == 0 and '"status": "revoked"' in r.out


async def test_crl_is_resigned_before_it_goes_stale(server, config) -> None:
    from datetime import timedelta

    service = plugin.revocation(server.ctx)
    first = service.published
    assert first is not None
    validity = timedelta(hours=config.pki.crl_validity_hours)
    assert first.next_update - first.this_update == validity
    assert not await service.refresh(now=first.this_update + timedelta(minutes=5))
    later = first.this_update + validity / 2 + timedelta(seconds=1)
    assert await service.refresh(now=later)
    second = service.published
    assert second is not None and second.number > first.number and second.next_update > first.next_update
    async with httpx.AsyncClient() as plain:
        served = x509.load_der_x509_crl(
            (await plain.get(listener_url(server, "web", tls=False) + "/crl/issuing.crl")).content
        )
    assert served.next_update_utc == second.next_update
    assert served.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == second.number
    on_disk = x509.load_der_x509_crl((config.ca_dir / "issuing.crl").read_bytes())
    assert on_disk.next_update_utc == second.next_update


async def test_ca_certificates_on_the_web_listener(server, config) -> None:
    from conftest import client_ssl_context

    ca = pki_services.ca(server.ctx)
    for url, verify in (
        (listener_url(server, "web", tls=False), False),
        (listener_url(server, "web", tls=True), client_ssl_context(config)),
    ):
        async with httpx.AsyncClient(base_url=url, verify=verify) as client:
            r = await client.get("/ca/root.pem")
            assert r.status_code == 200 and x509.load_pem_x509_certificates(r.content) == [ca.root]
            r = await client.get("/ca/root.crt")
            assert r.headers["Content-Type"] == "application/x-x509-ca-cert"
            assert x509.load_der_x509_certificate(r.content) == ca.root
            r = await client.get("/ca/chain.pem")
            assert x509.load_pem_x509_certificates(r.content) == ca.chain
            r = await client.get("/crl/issuing.crl")
            assert r.status_code == 200 and x509.load_der_x509_crl(r.content).issuer == ca.issuing.subject


async def test_odd_but_valid_queries(api: httpx.AsyncClient, db) -> None:
    await add_user(db)
    r = await api.get("/api/v1/certificates", params={"cursor": "9" * 18})
    assert r.status_code == 200
    r = await api.post(
        "/api/v1/certificates",
        json={"user": "alice", "type": "mail", "p12_password": "pw", "email": "élise@example.com"},
    )
    assert r.status_code == 400 and "email" in r.json()["error"]["message"]


async def test_generated_pkcs12_password(api: httpx.AsyncClient, db) -> None:
    await add_user(db)
    r = await api.post("/api/v1/certificates", json={"user": "alice", "type": "vpn"})
    assert r.status_code == 201, r.text
    password = r.json()["p12_password"]
    assert password and len(password) >= 20
    container = pkcs12.load_pkcs12(base64.b64decode(r.json()["pkcs12"]), password.encode())
    assert container.key is not None
    r = await api.post("/api/v1/certificates", json={"user": "alice", "type": "vpn", "p12_password": "mine"})
    assert r.json()["p12_password"] is None


async def test_cli_issue_from_a_der_csr(server, config, admin_token: str, db, tmp_path) -> None:
    await add_user(db)
    conn = [
        "--url",
        listener_url(server, "admin"),
        "--token",
        admin_token,
        "--data-dir",
        str(config.data_path),
    ]
    key = ec.generate_private_key(ec.SECP256R1())
    der = x509.load_pem_x509_csr(csr_for(key).encode()).public_bytes(serialization.Encoding.DER)
    (tmp_path / "req.der").write_bytes(der)
    r = await cli(
        "certs",
        "issue",
        "--user",
        "alice",
        "--type",
        "vpn",
        "--csr",
        str(tmp_path / "req.der"),
        "--out",
        str(tmp_path / "alice.pem"),
        *conn,
    )
    assert r.code == 0, r.err
    certs = x509.load_pem_x509_certificates((tmp_path / "alice.pem").read_bytes())
    assert certs[0].public_key() == key.public_key() and certs[1:] == pki_services.ca(server.ctx).chain
    r = await cli(
        "certs", "issue", "--user", "alice", "--type", "vpn", "--csr", str(tmp_path / "alice.pem"), *conn
    )
    assert r.code == 1 and "400 invalid_argument: csr: not a PKCS#10" in r.err
