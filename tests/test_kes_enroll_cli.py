"""``mdm enroll android`` as an operator runs it (``python -m mdm`` on the data directory): the
link and its QR code, the JSON output, ``--file`` with and without ``--pkcs12``, and refusals
that leave nothing behind."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cli_run import mdm_cli
from conftest import client_ssl_context, listener_url
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import func, select

from mdm.config import Config
from mdm.db.models import Event, User
from mdm.enroll.links import agent_token
from mdm.enroll.tables import Enrollment
from mdm.kes.enroll_package import spki_sha256
from mdm.pki.slots import load_slot_certificate
from mdm.pki.tables import IssuedCertificateRecord
from mdm.scep import challenges
from mdm.scep.tables import ScepChallenge
from mdm.server.runtime import Server

PUBLIC = "https://mdm.example.com:8061"
KES = {"host": "kes.example.com", "port": 13292}


@pytest.fixture
def extra_config() -> str:
    return (f'\n[enroll]\nlink_base_url = "{PUBLIC}"\nkes_host = "{KES["host"]}"\n'
            f'kes_port = {KES["port"]}\n')


async def _counts(db: Any) -> dict[str, int]:
    mobile = IssuedCertificateRecord.type == "mobile"
    async with db.session() as session:
        return {
            t.__tablename__: int(await session.scalar(select(func.count()).select_from(t).where(*w)) or 0)
            for t, *w in ((Enrollment,), (User,), (IssuedCertificateRecord, mobile), (Event,),
                          (ScepChallenge,))
        }


async def test_link_json_and_served_package(config: Config, server: Server, db: Any) -> None:
    code, out, err = await mdm_cli(config, "enroll", "android", "--user", "alice", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["url"].startswith(PUBLIC + "/e/") and data["user_created"] is True
    qr = json.loads(data["qr"])
    pin = spki_sha256(load_slot_certificate(config.certs_dir, "M"))
    assert qr["server"] == KES and qr["spki_sha256"] == pin and qr["url"] == data["url"]
    # The token is the one derived from the link's token, and a live challenge of this enrollment.
    link_token = urlsplit(data["url"]).path.removeprefix("/e/")
    assert qr["token"] == agent_token(link_token)
    async with db.session() as session:
        found = await challenges.match(session, qr["token"])
    assert found is not None and found.problem is None and found.purpose == f"kes-enrollment:{data['id']}"

    local = listener_url(server, "web", tls=True) + urlsplit(data["url"]).path
    async with httpx.AsyncClient(verify=client_ssl_context(config)) as web:
        r = await web.get(local)
        assert r.status_code == 200 and r.json()["token"] == qr["token"] and r.json()["server"] == KES
        assert (await web.get(local)).status_code == 410


async def test_terminal_qr(config: Config, db: Any) -> None:
    code, out, err = await mdm_cli(config, "enroll", "android", "--user", "bob")
    assert code == 0, err
    assert "(android), one-time link valid until" in out
    assert "▄" in out and "█" in out


@pytest.mark.parametrize("with_pkcs12", [False, True])
async def test_file(config: Config, db: Any, tmp_path: Path, with_pkcs12: bool) -> None:
    out_file = tmp_path / "alice.json"
    args = ["enroll", "android", "--user", "alice", "--file", str(out_file)]
    code, out, err = await mdm_cli(config, *args, *(["--pkcs12"] if with_pkcs12 else []))
    assert code == 0, err
    assert f"wrote the enrollment package to {out_file}" in out
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600  # it holds a one-time token
    package = json.loads(out_file.read_text())
    assert package["server"] == KES and package["user"] == "alice"
    async with db.session() as session:
        found = await challenges.match(session, package["token"])
        e = await session.scalar(select(Enrollment))
    assert e is not None and e.delivery == "file" and e.status == "delivered" and e.token_hash is None
    assert found is not None and found.problem is None and found.purpose == f"kes-enrollment:{e.id}"
    assert e.expires_at > e.created_at  # the token lives as long as a link would
    assert e.identity == ("pkcs12" if with_pkcs12 else "scep")
    if with_pkcs12:
        p12 = package["pkcs12"]
        loaded = pkcs12.load_pkcs12(base64.b64decode(p12["data"]), p12["password"].encode())
        assert loaded.cert is not None
        assert e.cert_serial == format(loaded.cert.certificate.serial_number, "x")
    else:
        assert "pkcs12" not in package and e.cert_serial is None
    assert (await _counts(db))["certificates"] == (1 if with_pkcs12 else 0)


async def test_missing_kes_certificate(config: Config, db: Any, tmp_path: Path) -> None:
    (config.certs_dir / "M.pem").unlink()
    for args in ((), ("--file", str(tmp_path / "x.json"))):
        code, _, err = await mdm_cli(config, "enroll", "android", "--user", "alice", *args)
        assert code == 1 and "slot 'M'" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()
    assert await _counts(db) == {"enrollments": 0, "users": 0, "certificates": 0, "events": 0,
                                 "scep_challenges": 0}


@pytest.mark.parametrize("extra_config", [""])
async def test_unknown_kes_port(config: Config, db: Any) -> None:
    # The test configuration lets the server pick the kes port: the CLI cannot know it.
    code, _, err = await mdm_cli(config, "enroll", "android", "--user", "alice")
    assert code == 1 and "enroll.kes_port" in err
    assert await _counts(db) == {"enrollments": 0, "users": 0, "certificates": 0, "events": 0,
                                 "scep_challenges": 0}


async def test_pkcs12_is_android_only(config: Config, db: Any) -> None:
    code, _, err = await mdm_cli(config, "enroll", "ios", "--user", "alice", "--pkcs12")
    assert code == 2 and "unrecognized arguments: --pkcs12" in err
