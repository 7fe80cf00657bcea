"""Bad input on the KES register and certificate endpoints: each gets its specific 4xx code and a
log line, and writes nothing (the tables are counted); a flood of bad registers costs a bounded
number of security events, not a write per request."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, update

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Device, Event, utcnow
from mdm.enroll.tables import Enrollment
from mdm.kes.config import KesConfig
from mdm.kes.tables import KesDevice
from mdm.scep.challenges import create_challenge
from mdm.scep.tables import ScepChallenge
from mdm.server.runtime import Server
from tests.kes_support import (
    android_enrollment,
    certificate_message,
    count,
    enroll_device,
    error_code,
    kes_client,
    make_csr,
    mobile_certificates,
    new_key,
    register_message,
    user,
)


@pytest.fixture
def extra_config() -> str:
    return "\n[kes]\nmax_body_bytes = 4096\n"


async def _nothing_written(db: Database) -> None:
    assert await count(db, Device.__table__) == 0
    assert await count(db, KesDevice.__table__) == 0
    assert await mobile_certificates(db) == 0


async def _post(server: Server, config: Config, path: str, **kwargs: object) -> httpx.Response:
    async with kes_client(server, config) as client:
        return await client.post(path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"[1, 2]", 422, "schema_violation"),
        (
            json.dumps({"v": 2, "request_id": "abcdefgh-1", "token": "x", "device": {}}).encode(),
            400,
            "unsupported_version",
        ),
        (json.dumps({"v": 1, "request_id": "abcdefgh-1", "token": "x"}).encode(), 422, "schema_violation"),
        (
            json.dumps(
                {"v": 1, "request_id": "abcdefgh-1", "token": "x", "device": {"device_id": "bad id!"}}
            ).encode(),
            422,
            "schema_violation",
        ),
    ],
)
async def test_malformed_messages_are_refused_precisely(
    server: Server,
    config: Config,
    db: Database,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    status: int,
    code: str,
) -> None:
    caplog.set_level(logging.INFO)
    answer = await _post(
        server, config, "/kes/v1/register", content=body, headers={"Content-Type": "application/json"}
    )
    assert (answer.status_code, error_code(answer)) == (status, code)
    assert "request refused" in caplog.text
    await _nothing_written(db)


async def test_an_oversized_body_is_413_before_it_is_read_whole(
    server: Server, config: Config, db: Database
) -> None:
    enrollment = await android_enrollment(db)
    msg = register_message(enrollment.token, "big", model="x" * 100)
    msg["fcm_token"] = "f" * 4096
    declared = await _post(server, config, "/kes/v1/register", json=msg)
    assert (declared.status_code, error_code(declared)) == (413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 1024  # JSON whitespace: valid until the limit cuts it off

    chunked = await _post(
        server, config, "/kes/v1/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert (chunked.status_code, error_code(chunked)) == (413, "payload_too_large")
    await _nothing_written(db)


async def test_unknown_used_expired_and_foreign_tokens_are_refused(
    server: Server, config: Config, db: Database
) -> None:
    user_id = await user(db, "alice")
    async with db.transaction() as session:
        ios_challenge = await create_challenge(
            session, user_id=user_id, purpose="ios-enrollment:7", ttl_seconds=600
        )
    used = await android_enrollment(db)
    expired = await android_enrollment(db)
    revoked = await android_enrollment(db)
    async with db.transaction() as session:
        await session.execute(
            update(ScepChallenge).where(ScepChallenge.purpose.like(f"%:{used.id}")).values(used_at=utcnow())
        )
        await session.execute(
            update(ScepChallenge)
            .where(ScepChallenge.purpose.like(f"%:{expired.id}"))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.execute(update(Enrollment).where(Enrollment.id == revoked.id).values(status="revoked"))
    cases = {
        "0123456789abcdef0123456789abcdef": "token_unknown",
        "short": "token_unknown",
        ios_challenge: "token_unknown",
        used.token: "token_used",
        expired.token: "token_expired",
        revoked.token: "token_expired",
    }
    async with kes_client(server, config) as client:
        for token, code in cases.items():
            answer = await client.post("/kes/v1/register", json=register_message(token, "dev-t"))
            assert (answer.status_code, error_code(answer)) == (403, code), token
            cert = await client.post(
                "/kes/v1/certificate", json=certificate_message(token, "dev-t", make_csr(new_key()))
            )
            assert (cert.status_code, error_code(cert)) in {(403, code), (409, "not_registered")}, token
    await _nothing_written(db)
    async with db.session() as session:
        reasons = {
            e.body["reason"]
            for e in (
                await session.scalars(select(Event).where(Event.type == "security_kes_identity_rejected"))
            ).all()
        }
        challenge = await session.scalar(
            select(ScepChallenge).where(ScepChallenge.purpose == "ios-enrollment:7")
        )
    assert {"unknown", "wrong_purpose", "used", "expired", "revoked"} <= reasons
    assert challenge is not None and challenge.used_at is None  # the iOS challenge was not consumed


async def test_a_flood_of_bad_registers_writes_no_device_and_a_bounded_number_of_events(
    server: Server, config: Config, db: Database
) -> None:
    before = await count(db, Event.__table__)
    async with kes_client(server, config) as client:
        for i in range(60):
            answer = await client.post("/kes/v1/register", json=register_message(f"{i:032x}", f"dev-{i}"))
            assert (answer.status_code, error_code(answer)) == (403, "token_unknown")
    await _nothing_written(db)
    verbatim = server.ctx.config.section(KesConfig).security_events_verbatim_per_interval
    assert 0 < await count(db, Event.__table__) - before <= verbatim


async def test_a_bad_csr_is_400_csr_invalid_and_keeps_the_token(
    server: Server, config: Config, db: Database
) -> None:
    enrollment = await android_enrollment(db)
    weak = rsa.generate_private_key(65537, 1024)
    garbage = "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 80 + "\n-----END CERTIFICATE REQUEST-----\n"
    async with kes_client(server, config) as client:
        assert (
            await client.post("/kes/v1/register", json=register_message(enrollment.token, "dev-b"))
        ).is_success
        for csr in (garbage, make_csr(weak)):
            answer = await client.post(
                "/kes/v1/certificate", json=certificate_message(enrollment.token, "dev-b", csr)
            )
            assert (answer.status_code, error_code(answer)) == (400, "csr_invalid"), answer.text
        assert await mobile_certificates(db) == 0
        good = await client.post(
            "/kes/v1/certificate", json=certificate_message(enrollment.token, "dev-b", make_csr(new_key()))
        )
    assert good.status_code == 200, good.text


async def test_an_android_id_bound_elsewhere_is_409_unless_owner_designated_or_ended(
    server: Server, config: Config, db: Database
) -> None:
    alice = await enroll_device(server, config, db, identifier="shared-id", user_name="alice")
    bob = await android_enrollment(db, user_name="bob")
    async with kes_client(server, config) as client:
        refused = await client.post(
            "/kes/v1/register", json=register_message(bob.token, "shared-id", fcm_token="b")
        )
    assert (refused.status_code, error_code(refused)) == (409, "device_bound_elsewhere")
    async with db.session() as session:
        device = await session.get(Device, alice.device_id)
        kes = await session.get(KesDevice, alice.device_id)
    assert device is not None and kes is not None
    assert (device.user_id, device.push_token, kes.enrollment_id) == (
        alice.user_id,
        "fcm-token-1",
        alice.enrollment_id,
    )

    owner_again = await android_enrollment(db, user_name="alice")
    designated = await android_enrollment(db, user_name="bob", for_device_id=alice.device_id)
    async with kes_client(server, config) as client:
        for enrollment, why in ((owner_again, "owner"), (designated, "for_device")):
            answer = await client.post(
                "/kes/v1/register", json=register_message(enrollment.token, "shared-id")
            )
            assert answer.status_code == 200, answer.text
            async with db.session() as session:
                event = await session.scalar(
                    select(Event).where(Event.type == "kes_device_registered").order_by(Event.id.desc())
                )
            assert event is not None and event.body["takeover"] == why

    # Once the device left, anyone's enrollment may take the id; the old certificate is unbound.
    async with kes_client(server, config, alice) as client:
        assert (
            await client.post("/kes/v1/unenroll", json={"v": 1, "request_id": "leave-0001"})
        ).status_code == 200
    carol = await android_enrollment(db, user_name="carol")
    async with kes_client(server, config) as client:
        answer = await client.post("/kes/v1/register", json=register_message(carol.token, "shared-id"))
    assert answer.status_code == 200, answer.text
    async with db.session() as session:
        device = await session.get(Device, alice.device_id)
        kes = await session.get(KesDevice, alice.device_id)
    assert device is not None and kes is not None
    assert (device.status, device.user_id, kes.cert_fingerprint) == ("ok", None, None)
    async with kes_client(server, config, alice) as client:
        old = await client.post("/kes/v1/unenroll", json={"v": 1, "request_id": "leave-0002"})
    assert (old.status_code, error_code(old)) == (403, "certificate_not_bound")
