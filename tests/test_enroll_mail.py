"""E-mailed enrollment links against a real local SMTP server (aiosmtpd): plain, STARTTLS with
AUTH, implicit TLS, and the failures an administrator meets (refused login, server down,
untrusted certificate). The enrollment survives every mail failure and says so."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import client_ssl_context
from enroll_support import APNS_TOML
from kes_enroll_support import decode_qr
from ports import free_port, free_ports
from sqlalchemy import select

from mdm.config import Config
from mdm.db.models import Event
from mdm.enroll.config import SmtpConfig
from mdm.enroll.tables import Enrollment
from mdm.server.runtime import Server

SMTP_USER, SMTP_PASSWORD = "mdm", "mail-secret"


@dataclass
class Sink:
    messages: list[EmailMessage] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.tls.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(), SMTP_PASSWORD.encode())
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers 535 itself


@dataclass
class SmtpServers:
    sink: Sink
    starttls_port: int  # plain, STARTTLS offered, AUTH only after STARTTLS
    ssl_port: int  # implicit TLS
    cert_dir: Path


@pytest.fixture
def smtp(pki_template: Path) -> Iterator[SmtpServers]:
    sink = Sink()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # The test PKI's "web" certificate names localhost; any server certificate would do.
    tls.load_cert_chain(pki_template / "certs" / "web.pem", pki_template / "certs" / "web.key")
    # Two distinct ports: two free_port() calls before either server binds may draw the same one.
    starttls_port, implicit_port = free_ports(2)
    starttls = Controller(sink, hostname="127.0.0.1", port=starttls_port, tls_context=tls,
                          authenticator=sink.authenticate, auth_require_tls=True)
    implicit = Controller(sink, hostname="127.0.0.1", port=implicit_port, ssl_context=tls,
                          authenticator=sink.authenticate, auth_require_tls=False)
    starttls.start()
    implicit.start()
    try:
        yield SmtpServers(sink, starttls.port, implicit.port, pki_template / "ca")
    finally:
        starttls.stop()
        implicit.stop()


@pytest.fixture
def extra_config(smtp: SmtpServers) -> str:
    return APNS_TOML + (
        f'\n[smtp]\nhost = "localhost"\nport = {smtp.starttls_port}\nsecurity = "none"\n'
        'from = "mdm@example.com"\nsubject = "Enroll your iPhone"\n'
    )


async def _events(db: Any, type_: str) -> list[Event]:
    async with db.session() as session:
        return list((await session.scalars(select(Event).where(Event.type == type_))).all())


async def _enroll(api: httpx.AsyncClient, user: str = "alice") -> dict[str, Any]:
    r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": user,
                                                    "email": f"{user}@example.com"})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


async def test_link_mailed_over_plain_smtp(api: httpx.AsyncClient, smtp: SmtpServers, config: Config,
                                           server: Server, db: Any) -> None:
    created = await _enroll(api)
    assert created["email"] == {"to": "alice@example.com", "sent": True, "error": None}
    [msg] = smtp.sink.messages
    assert msg["To"] == "alice@example.com" and msg["From"] == "mdm@example.com"
    assert msg["Subject"] == "Enroll your iPhone"
    assert created["url"] in _body(msg)
    [qr] = [p for p in msg.iter_attachments() if p.get_content_type() == "image/png"]
    assert qr.get_content().startswith(b"\x89PNG")
    assert len(await _events(db, "enrollment_mailed")) == 1
    async with db.session() as session:
        row = await session.get(Enrollment, created["id"])
        assert row is not None and row.mailed_at is not None and row.email == "alice@example.com"
    # The mailed link is the real one.
    async with httpx.AsyncClient(verify=client_ssl_context(config)) as web:
        r = await web.get(created["url"].replace("localhost", "127.0.0.1"))
    assert r.status_code == 200


async def test_starttls_with_login(api: httpx.AsyncClient, smtp: SmtpServers, config: Config, tmp_path: Path,
                                   server: Server) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(SMTP_PASSWORD + "\n")
    section = config.section(SmtpConfig)
    section.security = "starttls"
    section.username = SMTP_USER
    section.password_file = str(secret)
    section.ca_file = str(smtp.cert_dir / "root.pem")
    created = await _enroll(api)
    assert created["email"]["sent"] is True, created["email"]
    assert smtp.sink.tls == [True] and smtp.sink.logins == [SMTP_USER]


async def test_implicit_tls(api: httpx.AsyncClient, smtp: SmtpServers, config: Config,
                            server: Server) -> None:
    section = config.section(SmtpConfig)
    section.security = "ssl"
    section.port = smtp.ssl_port
    section.ca_file = str(smtp.cert_dir / "root.pem")
    created = await _enroll(api)
    assert created["email"]["sent"] is True, created["email"]
    assert smtp.sink.tls == [True]


async def test_refused_login_keeps_the_enrollment(api: httpx.AsyncClient, smtp: SmtpServers, config: Config,
                                                  tmp_path: Path, db: Any, server: Server) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("wrong")
    section = config.section(SmtpConfig)
    section.security = "starttls"
    section.username = SMTP_USER
    section.password_file = str(secret)
    section.ca_file = str(smtp.cert_dir / "root.pem")
    created = await _enroll(api)
    assert created["email"]["sent"] is False
    assert "refused the login of 'mdm'" in created["email"]["error"]
    assert "wrong" not in created["email"]["error"]  # never echo the password
    assert smtp.sink.messages == []
    [failed] = await _events(db, "enrollment_mail_failed")
    assert failed.severity == "warning" and failed.body["enrollment_id"] == created["id"]
    assert (await api.get(f"/api/v1/enrollments/{created['id']}")).json()["status"] == "pending"


async def test_untrusted_smtp_certificate(api: httpx.AsyncClient, smtp: SmtpServers, config: Config,
                                          server: Server) -> None:
    config.section(SmtpConfig).security = "starttls"  # system trust store: our test CA is not in it
    created = await _enroll(api)
    assert created["email"]["sent"] is False
    assert "TLS failed" in created["email"]["error"]


async def test_smtp_server_down(api: httpx.AsyncClient, config: Config, db: Any, server: Server) -> None:
    config.section(SmtpConfig).port = free_port()  # nobody listens there
    created = await _enroll(api)
    assert created["email"]["sent"] is False
    assert "Connection refused" in created["email"]["error"]
    assert len(await _events(db, "enrollment_mail_failed")) == 1
    assert (await api.get(f"/api/v1/enrollments/{created['id']}")).status_code == 200


async def test_android_link_mailed_with_its_qr_code(api: httpx.AsyncClient, smtp: SmtpServers,
                                                    server: Server, db: Any) -> None:
    r = await api.post("/api/v1/enrollments", json={"platform": "android", "user": "bob",
                                                    "email": "bob@example.com"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["email"]["sent"] is True
    [msg] = smtp.sink.messages
    body = _body(msg)
    assert created["url"] in body and "KES agent" in body and "iPhone" not in body
    [qr] = [p for p in msg.iter_attachments() if p.get_content_type() == "image/png"]
    # The mailed QR code is the answer's: the agent's enrollment data, token included.
    assert qr.get_content() == base64.b64decode(created["qr_png"])
    data = json.loads(decode_qr(qr.get_content()))
    assert data["url"] == created["url"] and len(data["token"]) == 32
    assert len(await _events(db, "enrollment_mailed")) == 1
