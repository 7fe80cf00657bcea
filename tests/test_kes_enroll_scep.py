"""An Android enrollment token is for the KES agent protocol only: SCEP refuses it with a real
SCEP request (and leaves it usable), and administrators cannot mint one through the SCEP API."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from conftest import client_ssl_context
from cryptography import x509
from kes_enroll_support import decode_qr
from scep_tools.support import make_challenge, new_key, scep_url
from sqlalchemy import func, select

from mdm.config import Config
from mdm.enroll.seams import KES_TOKEN_PURPOSE
from mdm.pki.tables import IssuedCertificateRecord
from mdm.scep import challenges, client
from mdm.scep.protocol import FailInfo
from mdm.scep.tables import ScepChallenge, ScepTransaction
from mdm.server.runtime import Server


def test_the_purpose_is_defined_once() -> None:
    assert KES_TOKEN_PURPOSE is challenges.KES_TOKEN_PURPOSE
    assert challenges.for_agent(f"{KES_TOKEN_PURPOSE}12")
    assert not challenges.for_agent("ios-enrollment:12") and not challenges.for_agent("admin")


async def _count(db: Any, table: Any, *where: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def test_scep_refuses_a_kes_token(api: httpx.AsyncClient, server: Server, config: Config,
                                        db: Any) -> None:
    r = await api.post("/api/v1/enrollments", json={"platform": "android", "user": "alice"})
    assert r.status_code == 201, r.text
    token = json.loads(decode_qr(base64.b64decode(r.json()["qr_png"])))["token"]
    before = await _count(db, IssuedCertificateRecord)

    with pytest.raises(client.ScepError) as caught:
        await client.enroll(scep_url(server), token, "phone", new_key(),
                            ssl_context=client_ssl_context(config))
    assert caught.value.fail_info == FailInfo.BAD_REQUEST
    # Refused before anything is written; the token stays usable for the agent.
    assert await _count(db, IssuedCertificateRecord) == before
    assert await _count(db, ScepTransaction) == 0
    async with db.session() as session:
        found = await challenges.match(session, token)
    assert found is not None and found.problem is None and found.purpose.startswith(KES_TOKEN_PURPOSE)

    # The same request with an ordinary challenge is served (the refusal is the token's purpose).
    ordinary = await make_challenge(db, purpose="admin")
    cert = await client.enroll(scep_url(server), ordinary, "phone", new_key(),
                               ssl_context=client_ssl_context(config))
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "phone"


async def test_admins_cannot_mint_kes_tokens(api: httpx.AsyncClient, db: Any) -> None:
    r = await api.post("/api/v1/scep/challenges", json={"purpose": f"{KES_TOKEN_PURPOSE}1"})
    assert r.status_code == 400, r.text
    assert "reserved" in r.json()["error"]["message"]
    assert await _count(db, ScepChallenge) == 0
    r = await api.post("/api/v1/scep/challenges", json={"purpose": "kes-enrollment"})  # no colon: not ours
    assert r.status_code == 201, r.text
