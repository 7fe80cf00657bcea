"""Issuance rules per certificate type: defaults from the migration, API and CLI, validation, and
a certificate source plugged in by name (the seam enterprise PKI connectors use)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from pki_support import cli, make_ca, name
from sqlalchemy import select

from mdm.config import Config
from mdm.db.models import Event, User
from mdm.pki import plugin as pki_plugin
from mdm.pki.issuance import CertificateRequest
from mdm.pki.rules import DEFAULT_RULES
from mdm.pki.sources import DEFAULT_SOURCES
from mdm.plugins import PLUGINS
from mdm.server.runtime import Server, open_context

DEFAULTS = [
    {
        "type": t,
        "validity_days": 365,
        "key_type": "rsa",
        "key_size": 2048,
        "renewal_days": 30,
        "source": "internal",
        "template": None,
    }
    for t in ("mobile", "mail", "vpn")
]


async def test_defaults(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/certificates/rules")
    assert r.status_code == 200
    assert r.json()["items"] == DEFAULTS
    assert [r.as_dict() for r in DEFAULT_RULES.values()] == DEFAULTS


async def test_migration_inserts_the_default_rules(tmp_path) -> None:
    from mdm.db import migrate
    from mdm.db.engine import Database
    from mdm.pki.rules import all_rules
    from mdm.pki.tables import IssuanceRuleRecord

    fresh = Database(f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}")
    try:
        await migrate.upgrade(fresh)
        async with fresh.session() as session:
            rows = (await session.scalars(select(IssuanceRuleRecord).order_by(IssuanceRuleRecord.type))).all()
            assert [(r.type, r.updated_by) for r in rows] == [
                ("mail", "default"),
                ("mobile", "default"),
                ("vpn", "default"),
            ]
            assert [r.as_dict() for r in await all_rules(session)] == DEFAULTS  # migration and code agree
    finally:
        await fresh.close()


async def test_set_rule_and_event(api: httpx.AsyncClient, db) -> None:
    r = await api.put(
        "/api/v1/certificates/rules/mobile",
        json={"validity_days": 730, "renewal_days": 60, "template": "MDM-Device"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {**DEFAULTS[0], "validity_days": 730, "renewal_days": 60, "template": "MDM-Device"}
    assert (await api.get("/api/v1/certificates/rules/mobile")).json() == r.json()
    r = await api.put("/api/v1/certificates/rules/mobile", json={"key_type": "ec"})
    assert r.json()["key_type"] == "ec" and r.json()["key_size"] == 256
    r = await api.put("/api/v1/certificates/rules/mobile", json={"key_type": "rsa", "template": ""})
    assert r.json()["key_size"] == 2048 and r.json()["template"] is None
    async with db.session() as session:
        changes = [
            e.body["changes"]
            for e in (
                await session.scalars(
                    select(Event).where(Event.type == "cert_rule_changed").order_by(Event.id)
                )
            ).all()
        ]
    assert changes[0] == {
        "validity_days": [365, 730],
        "renewal_days": [30, 60],
        "template": [None, "MDM-Device"],
    }
    assert changes[1] == {"key_type": ["rsa", "ec"], "key_size": [2048, 256]}
    # a PUT that changes nothing emits nothing
    await api.put("/api/v1/certificates/rules/mobile", json={"validity_days": 730})
    async with db.session() as session:
        assert len((await session.scalars(select(Event).where(Event.type == "cert_rule_changed"))).all()) == 3


async def test_rule_validation(api: httpx.AsyncClient) -> None:
    cases = [
        ("mobile", {"key_type": "ec", "key_size": 2048}, 400, "key_size: EC keys are P-256"),
        ("mobile", {"key_size": 1024}, 400, "key_size: RSA keys must be"),
        ("mobile", {"key_size": 3000}, 400, "key_size: RSA keys must be"),
        ("mobile", {"validity_days": 0}, 400, "validity_days"),
        ("mobile", {"validity_days": 20}, 400, "renewal_days: must be between 0"),
        ("mobile", {"source": "adcs"}, 400, "source: certificate source 'adcs' is not configured"),
        ("mobile", {"source": "nope"}, 400, "unknown certificate source 'nope'"),
        ("mobile", {"key_type": "dsa"}, 400, "key_type"),
        ("mobile", {"validity_days": None}, 400, "null is not a value"),
        ("mobile", {"colour": "blue"}, 400, "colour"),
        ("server", {"validity_days": 30}, 404, "no certificate type 'server'"),
        ("nope", {"validity_days": 30}, 404, "known: mobile, mail, vpn"),
    ]
    for type_, body, status, message in cases:
        r = await api.put(f"/api/v1/certificates/rules/{type_}", json=body)
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["error"]["message"], (body, r.text)
    assert (await api.get("/api/v1/certificates/rules")).json()["items"] == DEFAULTS


class EnterpriseSource:
    """An enterprise-PKI-like source: its own CA, and it records the template it was asked for."""

    name = "testpki"
    needs_csr = False

    def __init__(self) -> None:
        self.ca = make_ca("Enterprise Issuing CA")
        self.templates: list[str | None] = []

    async def poll(self, request_id: str) -> tuple[x509.Certificate, list[x509.Certificate]]:
        raise AssertionError("this source never pends")

    def trust_anchors(self) -> list[x509.Certificate]:
        return [self.ca.cert]

    async def sign(
        self, request: CertificateRequest, public_key: CertificatePublicKeyTypes
    ) -> tuple[x509.Certificate, list[x509.Certificate]]:
        self.templates.append(request.template)
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(request.common_name))
            .issuer_name(self.ca.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=request.days))
            .sign(self.ca.key, hashes.SHA256())
        )
        return cert, [self.ca.cert]


@pytest.fixture
async def enterprise_api(
    config: Config, admin_token: str
) -> AsyncIterator[tuple[httpx.AsyncClient, EnterpriseSource]]:
    """The admin API of a server whose PKI plugin was handed one more certificate source."""
    source = EnterpriseSource()
    pki = pki_plugin.make_plugin({**DEFAULT_SOURCES, "testpki": lambda _config, _ca: source})
    srv = Server(await open_context(config), tuple(pki if p.name == "pki" else p for p in PLUGINS))
    await srv.start()
    try:
        async with httpx.AsyncClient(
            base_url=listener_url(srv, "admin"), verify=client_ssl_context(config),
            headers={"Authorization": f"Bearer {admin_token}"}, timeout=30,
        ) as client:
            yield client, source
    finally:
        await srv.stop()


async def test_rules_pick_a_source_handed_to_the_plugin(
    enterprise_api: tuple[httpx.AsyncClient, EnterpriseSource], db
) -> None:
    api, source = enterprise_api
    async with db.transaction() as session:
        session.add(User(name="erin"))
    r = await api.put(
        "/api/v1/certificates/rules/vpn",
        json={"source": "testpki", "template": "VPNUser", "validity_days": 90},
    )
    assert r.status_code == 200, r.text
    r = await api.post("/api/v1/certificates", json={"user": "erin", "type": "vpn", "p12_password": "pw"})
    assert r.status_code == 201, r.text
    assert r.json()["certificate"]["source"] == "testpki"
    assert source.templates == ["VPNUser"]
    cert = x509.load_pem_x509_certificate(r.json()["certificate_pem"].encode())
    assert cert.issuer == source.ca.cert.subject


async def test_a_source_not_handed_to_the_plugin_is_refused(api: httpx.AsyncClient) -> None:
    r = await api.put("/api/v1/certificates/rules/vpn", json={"source": "testpki"})
    assert r.status_code == 400, r.text
    assert "unknown certificate source 'testpki' (known: adcs, internal)" in r.text


async def test_cli_rules(server, config, admin_token: str) -> None:
    conn = [
        "--url",
        listener_url(server, "admin"),
        "--token",
        admin_token,
        "--data-dir",
        str(config.data_path),
    ]
    r = await cli("certs", "rules", "show", *conn)
    assert r.code == 0
    assert r.out.splitlines()[0].split() == [
        "TYPE",
        "VALIDITY",
        "KEY",
        "RENEW",
        "BEFORE",
        "SOURCE",
        "TEMPLATE",
    ]
    assert r.out.splitlines()[1].split() == ["mobile", "365d", "rsa-2048", "30d", "internal", "-"]
    r = await cli(
        "certs",
        "rules",
        "set",
        "--type",
        "mail",
        "--validity-days",
        "180",
        "--renewal-days",
        "0",
        "--template",
        "SMIME",
        *conn,
    )
    assert r.code == 0, r.err
    assert r.out.splitlines()[1].split() == ["mail", "180d", "rsa-2048", "never", "internal", "SMIME"]
    r = await cli("certs", "rules", "set", "--type", "mail", "--key-size", "1024", *conn)
    assert r.code == 1 and "400 invalid_argument: key_size" in r.err
    r = await cli("certs", "rules", "set", "--type", "mail", *conn)
    assert r.code == 2 and "nothing to change" in r.err
    r = await cli("certs", "rules", "show", "--type", "mail", "--json", *conn)
    assert r.code == 0 and '"template": "SMIME"' in r.out
