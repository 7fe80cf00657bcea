"""SCEP bad input over the real iOS listener: each case gets a specific failInfo or HTTP 4xx,
never a 500, and leaves nothing half-written."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asn1crypto import cms
from conftest import client_ssl_context
from cryptography.hazmat.primitives import serialization
from scep_tools.forge import Forge, flip_signature, issued, post, reply_of, resign, with_content_algorithm
from scep_tools.support import (
    certificate_count,
    challenge_used,
    make_challenge,
    new_key,
    scep_url,
    transaction_count,
)
from sqlalchemy import update

from mdm.config import Config
from mdm.core.errors import InvalidArgument
from mdm.db.engine import Database
from mdm.scep import client, envelope, settings
from mdm.scep.keys import SCEP
from mdm.scep.protocol import FailInfo, MessageType, PkiStatus
from mdm.scep.tables import ScepChallenge
from mdm.server.runtime import Server


@pytest.fixture
async def http(server: Server, config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=client_ssl_context(config), timeout=30) as c:
        yield c


@pytest.fixture
async def ca(http: httpx.AsyncClient, server: Server) -> client.ServerInfo:
    return client.select_certificates(await client.get_ca_certificates(http, scep_url(server)), frozenset())


async def _failure(http: httpx.AsyncClient, server: Server, forged, ca, fail_info: FailInfo) -> str:
    reply = reply_of(await post(http, scep_url(server), forged.der), forged, ca)
    assert reply.pki_status == PkiStatus.FAILURE, reply
    assert reply.fail_info == fail_info.value, (reply.fail_info, reply.fail_info_text)
    assert not reply.content
    return reply.fail_info_text or ""


async def _nothing_written(db: Database) -> None:
    assert await certificate_count(db) == 0
    assert await transaction_count(db) == 0


async def test_wrong_challenge(http, server, ca, db) -> None:
    await make_challenge(db)
    forged = Forge(ca, new_key()).pkcs_req("0" * 32)
    text = await _failure(http, server, forged, ca, FailInfo.BAD_REQUEST)
    assert "challenge" in text
    await _nothing_written(db)
    assert not await challenge_used(db)


async def test_missing_challenge(http, server, ca, db) -> None:
    await _failure(http, server, Forge(ca, new_key()).pkcs_req(None), ca, FailInfo.BAD_REQUEST)
    await _nothing_written(db)


async def test_reused_challenge(http, server, ca, db) -> None:
    challenge = await make_challenge(db)
    first = Forge(ca, new_key()).pkcs_req(challenge)
    reply = reply_of(await post(http, scep_url(server), first.der), first, ca)
    assert reply.pki_status == PkiStatus.SUCCESS
    second = Forge(ca, new_key(), cn="other").pkcs_req(challenge)
    await _failure(http, server, second, ca, FailInfo.BAD_REQUEST)
    assert await certificate_count(db) == 1
    assert await transaction_count(db) == 1


async def test_expired_challenge(http, server, ca, db) -> None:
    challenge = await make_challenge(db)
    async with db.transaction() as session:
        await session.execute(
            update(ScepChallenge).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    await _failure(http, server, Forge(ca, new_key()).pkcs_req(challenge), ca, FailInfo.BAD_REQUEST)
    await _nothing_written(db)
    assert not await challenge_used(db)


async def test_static_challenge_is_not_accepted_unless_configured(http, server, ca, db) -> None:
    await _failure(http, server, Forge(ca, new_key()).pkcs_req(""), ca, FailInfo.BAD_REQUEST)
    await _nothing_written(db)


async def test_replayed_transaction_id_with_another_key(http, server, ca, db) -> None:
    first = Forge(ca, new_key()).pkcs_req(await make_challenge(db, purpose="first"))
    assert reply_of(await post(http, scep_url(server), first.der), first, ca).pki_status == PkiStatus.SUCCESS
    fresh = await make_challenge(db, purpose="second")
    replay = Forge(ca, new_key()).pkcs_req(fresh, transaction_id=first.transaction_id)
    text = await _failure(http, server, replay, ca, FailInfo.BAD_REQUEST)
    assert "transactionID" in text
    assert await certificate_count(db) == 1
    assert not await challenge_used(db, purpose="second")


async def test_replay_after_success(http, server, ca, db) -> None:
    forge = Forge(ca, new_key())
    challenge = await make_challenge(db)
    first = forge.pkcs_req(challenge)
    assert reply_of(await post(http, scep_url(server), first.der), first, ca).pki_status == PkiStatus.SUCCESS
    again = forge.pkcs_req(challenge)  # same key, same transaction id, fresh nonce
    await _failure(http, server, again, ca, FailInfo.BAD_REQUEST)
    assert await certificate_count(db) == 1


@pytest.mark.parametrize("algorithm", ["rc2", "des"])
async def test_unsupported_envelope_algorithm(http, server, ca, db, algorithm: str) -> None:
    forge = Forge(ca, new_key())
    challenge = await make_challenge(db)
    sealed = with_content_algorithm(envelope.encrypt(forge.csr(challenge), ca.recipient, "3des"), algorithm)
    text = await _failure(http, server, forge.message(b"", envelope_der=sealed), ca, FailInfo.BAD_ALG)
    assert algorithm.upper() in text.upper()
    await _nothing_written(db)
    assert not await challenge_used(db)


async def test_md5_digest(http, server, ca, db) -> None:
    forge = Forge(ca, new_key())
    forged = forge.pkcs_req(await make_challenge(db))
    forged.der = resign(forged.der, forge.key, digest="md5")
    await _failure(http, server, forged, ca, FailInfo.BAD_ALG)
    await _nothing_written(db)


async def test_bad_signature(http, server, ca, db) -> None:
    forged = Forge(ca, new_key()).pkcs_req(await make_challenge(db))
    forged.der = flip_signature(forged.der)
    await _failure(http, server, forged, ca, FailInfo.BAD_MESSAGE_CHECK)
    await _nothing_written(db)
    assert not await challenge_used(db)


async def test_envelope_for_another_recipient(http, server, ca, db) -> None:
    """Encrypted to the issuing CA instead of the RA: the CA key is never used to decrypt."""
    forged = Forge(ca, new_key()).pkcs_req(await make_challenge(db), recipient=ca.issuer)
    await _failure(http, server, forged, ca, FailInfo.BAD_MESSAGE_CHECK)
    await _nothing_written(db)


async def test_signer_is_not_the_requested_key(http, server, ca, db) -> None:
    other = Forge(ca, new_key(), cn="other")
    forged = Forge(ca, new_key()).pkcs_req(
        await make_challenge(db), identity=other.identity, identity_key=other.key
    )
    await _failure(http, server, forged, ca, FailInfo.BAD_REQUEST)
    await _nothing_written(db)


async def test_small_rsa_key(http, server, ca, db) -> None:
    text = await _failure(
        http, server, Forge(ca, new_key(1024)).pkcs_req(await make_challenge(db)), ca, FailInfo.BAD_REQUEST
    )
    assert "1024" in text
    await _nothing_written(db)
    assert not await challenge_used(db)


async def test_csr_without_common_name(http, server, ca, db) -> None:
    forge = Forge(ca, new_key())
    forged = forge.message(forge.csr(await make_challenge(db), cn=""), identity=forge.identity)
    await _failure(http, server, forged, ca, FailInfo.BAD_REQUEST)


async def test_envelope_not_a_csr(http, server, ca, db) -> None:
    await _failure(http, server, Forge(ca, new_key()).message(b"not a CSR"), ca, FailInfo.BAD_REQUEST)


async def test_signing_time_far_off(http, server, ca, db) -> None:
    forged = Forge(ca, new_key()).pkcs_req(
        await make_challenge(db), signing_time=datetime.now(UTC) - timedelta(days=3)
    )
    await _failure(http, server, forged, ca, FailInfo.BAD_TIME)
    await _nothing_written(db)


async def test_unknown_message_type_and_getcrl(http, server, ca) -> None:
    forge = Forge(ca, new_key())
    await _failure(http, server, forge.message(b"x", kind="99"), ca, FailInfo.BAD_REQUEST)
    await _failure(http, server, forge.message(b"x", kind=MessageType.GET_CRL), ca, FailInfo.BAD_REQUEST)


async def test_poll_and_getcert_unknown(http, server, ca) -> None:
    forge = Forge(ca, new_key())
    await _failure(http, server, forge.message(b"x", kind=MessageType.CERT_POLL), ca, FailInfo.BAD_CERT_ID)
    ias = cms.IssuerAndSerialNumber(
        {"issuer": cms.Name.load(ca.issuer.subject.public_bytes()), "serial_number": 12345}
    ).dump()
    await _failure(http, server, forge.message(ias, kind=MessageType.GET_CERT), ca, FailInfo.BAD_CERT_ID)


async def test_getcert_returns_an_issued_certificate(http, server, ca, db) -> None:
    forge = Forge(ca, new_key())
    first = forge.pkcs_req(await make_challenge(db))
    cert = issued(reply_of(await post(http, scep_url(server), first.der), first, ca), first)
    ias = cms.IssuerAndSerialNumber(
        {"issuer": cms.Name.load(cert.issuer.public_bytes()), "serial_number": cert.serial_number}
    ).dump()
    other = Forge(ca, new_key(), cn="asker")
    forged = other.message(ias, kind=MessageType.GET_CERT, transaction_id="getcert-1")
    reply = reply_of(await post(http, scep_url(server), forged.der), forged, ca)
    assert reply.pki_status == PkiStatus.SUCCESS
    assert issued(reply, forged) == cert


# ---- HTTP-level refusals -----------------------------------------------------------------------
async def _http_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] and body["error"]["message"]
    return str(body["error"]["message"])


async def test_truncated_and_garbage_bodies(http, server, ca, db) -> None:
    good = Forge(ca, new_key()).pkcs_req(await make_challenge(db)).der
    url = scep_url(server)
    for body in (good[: len(good) // 2], good[:-1], good[:20], b"garbage", b"", b"\x30\x80" * 100):
        message = await _http_error(await post(http, url, body), 400)
        assert "pkiMessage" in message or "message" in message
    await _nothing_written(db)
    assert not await challenge_used(db)


async def test_wrong_content_type(http, server, ca, db) -> None:
    good = Forge(ca, new_key()).pkcs_req(await make_challenge(db)).der
    for ctype in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
        await _http_error(await post(http, scep_url(server), good, content_type=ctype), 415)
    await _nothing_written(db)


async def test_oversize(http, server, db) -> None:
    await _http_error(await post(http, scep_url(server), b"\x30" * 70_000), 413)
    big = base64.b64encode(b"\x30" * 7000).decode()
    r = await http.get(scep_url(server), params={"operation": "PKIOperation", "message": big})
    assert r.status_code in (413, 414, 400)  # aiohttp itself may refuse an overlong request line


async def test_operations(http, server) -> None:
    url = scep_url(server)
    assert "missing operation" in await _http_error(await http.get(url), 400)
    assert "unsupported operation" in await _http_error(
        await http.get(url, params={"operation": "GetNextCACert"}), 400
    )
    r = await http.get(url, params={"operation": "PKIOperation", "message": "%%%not base64"})
    assert "base64" in await _http_error(r, 400)
    await _http_error(await http.get(url, params={"operation": "PKIOperation"}), 400)
    r = await http.post(url, params={"operation": "GetCACaps"}, content=b"x")
    await _http_error(r, 400)


async def test_pkioperation_by_get(http, server, ca, db) -> None:
    forged = Forge(ca, new_key()).pkcs_req(await make_challenge(db), digest="sha1", encryption="3des")
    r = await http.get(
        scep_url(server),
        params={"operation": "PKIOperation", "message": base64.b64encode(forged.der).decode()},
    )
    reply = reply_of(r, forged, ca)
    assert reply.pki_status == PkiStatus.SUCCESS
    assert reply.digest_algorithm == "sha1"  # an old client gets the digest it can check
    assert envelope.algorithm_of(reply.content or b"") == "3des"
    assert (
        issued(reply, forged).public_key().public_numbers()
        == forged.identity_key.public_key().public_numbers()
    )


async def test_mutations_never_500(http, server, ca, db) -> None:
    """Random byte flips and cuts of a valid message: always a CertRep or a 400, never a 500."""
    good = Forge(ca, new_key()).pkcs_req(await make_challenge(db)).der
    rng = random.Random(8894)
    statuses: set[int] = set()
    for _ in range(120):
        body = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        if rng.random() < 0.3:
            body = body[: rng.randrange(len(body))]
        r = await post(http, scep_url(server), bytes(body))
        statuses.add(r.status_code)
        assert r.status_code in (200, 400), r.text
    assert statuses == {200, 400}
    assert await certificate_count(db) <= 1


async def test_concurrent_reuse_exactly_one_wins(http, server, ca, db) -> None:
    challenge = await make_challenge(db)
    forged = [Forge(ca, new_key(), cn=f"racer-{i}").pkcs_req(challenge) for i in range(6)]
    responses = await asyncio.gather(*(post(http, scep_url(server), f.der) for f in forged))
    statuses = [reply_of(r, f, ca).pki_status for r, f in zip(responses, forged, strict=True)]
    assert statuses.count(PkiStatus.SUCCESS) == 1, statuses
    assert statuses.count(PkiStatus.FAILURE) == 5
    assert await certificate_count(db) == 1
    assert await transaction_count(db) == 1


async def test_der_of_reply_is_cms(http, server, ca, db, config) -> None:
    """openssl cms verifies our CertRep against the RA certificate chain (an independent verifier)."""
    import subprocess

    forged = Forge(ca, new_key()).pkcs_req(await make_challenge(db))
    r = await post(http, scep_url(server), forged.der)
    tmp = config.data_path / "rep.der"
    tmp.write_bytes(r.content)
    chain = config.data_path / "chain-for-openssl.pem"
    chain.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (ca.issuer,))
        + (config.ca_dir / "root.pem").read_bytes()
    )
    out = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(tmp),
            "-CAfile",
            str(chain),
            "-purpose",
            "any",
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


class _RefusingSource:
    """A certificate source that refuses (as an enterprise CA or an issuance rule may)."""

    name = "refusing"
    needs_csr = False

    async def sign(self, request, public_key):
        raise InvalidArgument("template MobileDevice does not allow this subject")


async def test_issuance_refused_is_a_failure_and_writes_nothing(http, server, ca, db) -> None:
    from mdm.pki.services import CA
    from mdm.pki.sources import SourceSet

    # the sources SCEP issues through (the rule of [scep] cert_type names "internal")
    server.ctx.services[SCEP].sources = SourceSet(
        server.ctx.config, server.ctx.services[CA], {"internal": lambda _c, _a: _RefusingSource()}
    )
    forged = Forge(ca, new_key()).pkcs_req(await make_challenge(db))
    text = await _failure(http, server, forged, ca, FailInfo.BAD_REQUEST)
    assert "template MobileDevice" in text
    await _nothing_written(db)
    assert not await challenge_used(db)


def test_public_url(config: Config) -> None:
    assert settings.public_url(config, 443) == "https://localhost/scep"
    assert settings.public_url(config, 8443) == "https://localhost:8443/scep"
