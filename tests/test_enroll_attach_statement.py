"""Which enrollment an identity came from, as the check-in asks at every Authenticate
(``mdm.enroll.attach``): a PKCS#12 identity by its serial, a SCEP identity through its request's
one-time challenge, the user's latest unbound SCEP enrollment as the fallback. The serial and the
challenge are asked in one statement (issue 12, check-in storms); the enrollment is linked to the
device once."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select

from mdm.db.engine import Database
from mdm.db.models import User, utcnow
from mdm.enroll import attach
from mdm.enroll.profiles import SCEP_PURPOSE
from mdm.enroll.store import Attached
from mdm.enroll.tables import Enrollment, EnrollmentStatus
from mdm.scep.tables import ScepChallenge, ScepTransaction
from mdm.server.runtime import Server


async def user_row(db: Database, name: str) -> int:
    async with db.transaction() as session:
        user = User(name=name, email=None)
        session.add(user)
        await session.flush()
        return user.id


async def enrollment_row(db: Database, user_id: int, *, identity: str, serial: str | None = None,
                      status: str = EnrollmentStatus.DOWNLOADED.value, ago: int = 0,
                      device_id: int | None = None, for_device_id: int | None = None) -> int:
    now = utcnow()
    async with db.transaction() as session:
        row = Enrollment(
            uuid=str(uuid.uuid4()), platform="ios", user_id=user_id, delivery="link", status=status,
            identity=identity, expires_at=now + timedelta(days=1), downloaded_at=now - timedelta(minutes=ago),
            mdm_profile_identifier=f"com.example.mdm.{uuid.uuid4().hex[:8]}", cert_serial=serial,
            device_id=device_id, for_device_id=for_device_id,
        )  # fmt: skip
        session.add(row)
        await session.flush()
        return row.id


async def scep_request(db: Database, serial: str, purpose: str) -> None:
    now = utcnow()
    async with db.transaction() as session:
        challenge = ScepChallenge(
            prefix=uuid.uuid4().hex[:8], secret_hash=b"\0" * 32, purpose=purpose, expires_at=now
        )
        session.add(challenge)
        await session.flush()
        session.add(ScepTransaction(
            transaction_id=uuid.uuid4().hex, message_type="PKCSReq", status="issued", key_fingerprint="k",
            signer_fingerprint="s", subject="CN=x", csr=b"", challenge_id=challenge.id, cert_serial=serial,
        ))  # fmt: skip


async def _device_of(db: Database, enrollment_id: int) -> int | None:
    async with db.session() as session:
        device_id: int | None = await session.scalar(
            select(Enrollment.device_id).where(Enrollment.id == enrollment_id)
        )
        return device_id


async def _attach(db: Database, **kwargs: Any) -> tuple[Attached | None, list[str]]:
    statements: list[str] = []

    def executed(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(sql)

    event.listen(db.engine.sync_engine, "before_cursor_execute", executed)
    try:
        async with db.transaction() as session:
            found = await attach.attach_device(session, **kwargs)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", executed)
    return found, statements


async def test_a_pkcs12_identity_finds_its_enrollment_in_one_statement(server: Server, db: Database) -> None:
    user_id = await user_row(db, "alice")
    enrollment_id = await enrollment_row(db, user_id, identity="pkcs12", serial="1a2b")
    found, statements = await _attach(db, device_id=501, cert_serial=0x1A2B)
    assert found is not None and found.id == enrollment_id and found.user_id == user_id
    assert found.device_id == 501 and found.mdm_profile_identifier.startswith("com.example.mdm.")
    assert len(statements) == 2, statements  # the look-up, then the link
    assert await _device_of(db, enrollment_id) == 501
    # Bound already: found again (another device's Authenticate with it), never moved.
    found, statements = await _attach(db, device_id=502, cert_serial="001A2B")
    assert found is not None and found.id == enrollment_id and found.device_id == 501
    assert len(statements) == 1, statements
    assert await _device_of(db, enrollment_id) == 501


async def test_an_unknown_serial_is_one_statement_and_nothing(server: Server, db: Database) -> None:
    found, statements = await _attach(db, device_id=503, cert_serial="ffee01")
    assert found is None
    assert len(statements) == 1, statements


async def test_a_scep_identity_finds_the_enrollment_its_challenge_was_made_for(
    server: Server, db: Database
) -> None:
    user_id = await user_row(db, "bob")
    enrollment_id = await enrollment_row(db, user_id, identity="scep")
    other = await enrollment_row(db, user_id, identity="scep", ago=-5)  # more recent: not the fallback's pick
    await scep_request(db, "c0ffee", f"{SCEP_PURPOSE}{enrollment_id}")
    found, statements = await _attach(db, device_id=504, cert_serial="C0FFEE", user_id=user_id)
    assert found is not None and found.id == enrollment_id and found.device_id == 504
    assert len(statements) == 3, statements  # serial and challenge, the enrollment by id, the link
    assert await _device_of(db, enrollment_id) == 504
    assert await _device_of(db, other) is None
    # A challenge of another purpose (a KES one, or a malformed id) names no enrollment.
    await scep_request(db, "c0ffef", "kes-enrollment:7")
    await scep_request(db, "c0fff0", f"{SCEP_PURPOSE}x1")
    assert (await _attach(db, device_id=505, cert_serial="c0ffef"))[0] is None
    assert (await _attach(db, device_id=505, cert_serial="c0fff0"))[0] is None


async def test_without_a_match_the_users_latest_unbound_scep_enrollment(server: Server, db: Database) -> None:
    user_id = await user_row(db, "carol")
    older = await enrollment_row(db, user_id, identity="scep", ago=30)
    latest = await enrollment_row(db, user_id, identity="scep", ago=10)
    await enrollment_row(db, user_id, identity="scep", ago=1, device_id=99)  # bound already
    await enrollment_row(db, user_id, identity="scep", ago=0, status=EnrollmentStatus.PENDING.value)
    await enrollment_row(db, user_id, identity="pkcs12", ago=0)
    found, _ = await _attach(db, device_id=506, cert_serial="abc123", user_id=user_id)
    assert found is not None and found.id == latest and found.device_id == 506
    found, _ = await _attach(db, device_id=507, cert_serial="abc124", user_id=user_id)
    assert found is not None and found.id == older and found.device_id == 507
    assert (await _attach(db, device_id=508, cert_serial="abc125", user_id=user_id))[0] is None
    assert [await _device_of(db, e) for e in (older, latest)] == [507, 506]
