"""``mdm enroll`` as an operator runs it (``python -m mdm`` in a subprocess on the data directory):
output, exit codes, the --file profile checked with openssl, and nothing half-written on errors."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cli_run import mdm_cli
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
from sqlalchemy import func, select

from mdm.config import Config
from mdm.db.models import Event, User
from mdm.enroll.tables import Enrollment
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.runtime import Server

PUBLIC = "https://mdm.example.com:8061"


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML + f'\n[enroll]\nlink_base_url = "{PUBLIC}"\n'


async def _counts(db: Any) -> dict[str, int]:
    """Rows per table; certificates: device identities only (not the listeners' own)."""
    mobile = IssuedCertificateRecord.type == "mobile"
    async with db.session() as session:
        return {
            t.__tablename__: int(await session.scalar(select(func.count()).select_from(t).where(*w)) or 0)
            for t, *w in ((Enrollment,), (User,), (IssuedCertificateRecord, mobile), (Event,))
        }


async def test_link_with_qr_served_by_the_server(config: Config, server: Server, db: Any) -> None:
    code, out, err = await mdm_cli(config, "enroll", "ios", "--user", "alice")
    assert code == 0, err
    assert "Enrollment 1 for alice (new user) (ios), one-time link valid until" in out
    url = next(line for line in out.splitlines() if line.startswith(PUBLIC + "/e/"))
    assert "▄" in out and "█" in out  # the QR code, drawn with half blocks
    assert "APNs certificate expired" in err  # the fixture push certificate is from 2021
    # Any replica's web listener on the same database serves it.
    local = listener_url(server, "web", tls=True) + urlsplit(url).path
    async with httpx.AsyncClient(verify=client_ssl_context(config)) as web:
        assert (await web.get(local)).status_code == 200
        assert (await web.get(local)).status_code == 410
    async with db.session() as session:
        e = await session.scalar(select(Enrollment))
        assert e is not None and e.created_by and e.created_by.startswith("cli:")


async def test_json_output(config: Config, db: Any) -> None:
    code, out, err = await mdm_cli(config, "enroll", "ios", "--user", "bob", "--json", "--no-qr")
    assert code == 0, err
    data = json.loads(out)
    assert data["user"] == "bob" and data["url"].startswith(PUBLIC + "/e/") and data["email"] is None


async def test_file_for_apple_configurator(config: Config, db: Any, tmp_path: Path) -> None:
    out_file = tmp_path / "alice.mobileconfig"
    code, out, err = await mdm_cli(config, "enroll", "ios", "--user", "alice", "--file", str(out_file))
    assert code == 0, err
    assert f"wrote the signed profile to {out_file}" in out
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600  # it holds the device's private key
    profile = parse(openssl_verify(out_file.read_bytes(), config.ca_dir / "root.pem", tmp_path))
    assert schema_problems(profile) == []
    by_type = payloads(profile)
    assert by_type["com.apple.mdm"]["Topic"] == PUSH_TOPIC
    identity = open_pkcs12(by_type["com.apple.security.pkcs12"])
    assert identity.cert is not None
    async with db.session() as session:
        e = await session.scalar(select(Enrollment))
        assert e is not None and e.status == "delivered" and e.delivery == "file" and e.token_hash is None
        assert e.cert_serial == format(identity.cert.certificate.serial_number, "x")
    assert (await _counts(db))["certificates"] == 1


async def test_unwritable_file_leaves_nothing(config: Config, db: Any, tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "sub"
    target.parent.write_text("a file, not a directory")
    out_file = str(target / "x.mobileconfig")
    code, _, err = await mdm_cli(config, "enroll", "ios", "--user", "alice", "--file", out_file)
    assert code == 1
    assert "mdm: error: cannot write" in err
    assert await _counts(db) == {"enrollments": 0, "users": 0, "certificates": 0, "events": 0}


@pytest.mark.parametrize(("args", "code", "message"), [
    (("enroll", "android", "--user", ""), 2, "user must not be empty"),
    (("enroll", "android", "--user", "alice", "--email", "a@b@c"), 2, "not an e-mail address"),
    (("enroll", "ios", "--user", ""), 2, "user must not be empty"),
    (("enroll", "ios", "--user", "alice", "--email", "nope"), 2, "not an e-mail address"),
    (("enroll", "ios", "--user", "alice", "--email", "a@example.com", "--file", "x"), 2,
     "exclude each other"),
    (("enroll", "ios", "--user", "alice", "--email", "a@example.com"), 1, "smtp.host"),
    (("enroll", "windows", "--user", "alice"), 2, "invalid choice"),
    (("enroll", "ios"), 2, "--user"),
])
async def test_bad_input(config: Config, db: Any, args: tuple[str, ...], code: int, message: str) -> None:
    got, out, err = await mdm_cli(config, *args)
    assert got == code, (out, err)
    assert message in err
    assert "Traceback" not in err
    assert await _counts(db) == {"enrollments": 0, "users": 0, "certificates": 0, "events": 0}


@pytest.mark.parametrize("extra_config", [""])
async def test_missing_apns_certificate(config: Config, db: Any, tmp_path: Path) -> None:
    for extra in ((), ("--file", str(tmp_path / "x.mobileconfig"))):
        code, _, err = await mdm_cli(config, "enroll", "ios", "--user", "alice", *extra)
        assert code == 1
        assert "mdm: error: configure apns.certificate_file" in err
    assert not (tmp_path / "x.mobileconfig").exists()
    assert await _counts(db) == {"enrollments": 0, "users": 0, "certificates": 0, "events": 0}


@pytest.mark.parametrize("extra_config", [
    APNS_TOML + f'\n[enroll]\nlink_base_url = "{PUBLIC}"\n'
    '[smtp]\nhost = "127.0.0.1"\nport = 9\nsecurity = "none"\nfrom = "mdm@example.com"\ntimeout_seconds = 5\n'
])
async def test_mail_failure_still_prints_the_link(config: Config, db: Any) -> None:
    code, out, err = await mdm_cli(config, "enroll", "ios", "--user", "alice", "--email", "alice@example.com")
    assert code == 1
    assert PUBLIC + "/e/" in out and "E-mail NOT sent" in out
    assert "the link exists but was not mailed" in err
    counts = await _counts(db)
    assert counts["enrollments"] == 1
    async with db.session() as session:
        types = set((await session.scalars(select(Event.type))).all())
    assert "enrollment_mail_failed" in types
