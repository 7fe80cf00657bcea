"""Shared helpers of the traffic-light tests: rows written for real, the sources asked through
the status report as the endpoint asks them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from mdm.core.status import AreaStatus, StatusSource, StatusSources
from mdm.db.engine import Database
from mdm.db.models import CommandQueueEntry, User
from mdm.enroll.tables import Enrollment


async def light_of(db: Database, source: StatusSource) -> AreaStatus:
    async with db.session() as session:
        return await source.status(session)


def registry(*sources: StatusSource) -> StatusSources:
    reg = StatusSources()
    for s in sources:
        reg.register(s)
    return reg


async def age_queue(db: Database, command_id: int, age: timedelta) -> None:
    async with db.transaction() as session:
        await session.execute(update(CommandQueueEntry).where(CommandQueueEntry.command_id == command_id)
                              .values(created_at=datetime.now(UTC) - age))


async def add_user(db: Database, name: str = "alice") -> int:
    async with db.transaction() as session:
        user = User(name=name)
        session.add(user)
        await session.flush()
        return user.id


async def add_enrollment(
    db: Database, user_id: int, *, status: str = "pending", email: str | None = None,
    created_ago: timedelta = timedelta(minutes=5), expires_in: timedelta = timedelta(days=1),
    mailed: bool = False,
) -> int:
    now = datetime.now(UTC)
    async with db.transaction() as session:
        row = Enrollment(
            uuid=str(uuid.uuid4()), platform="ios", user_id=user_id, email=email, delivery="link",
            status=status, identity="pkcs12", token_hash=uuid.uuid4().bytes * 2,
            created_at=now - created_ago, expires_at=now + expires_in,
            mailed_at=now - created_ago if mailed else None,
            mdm_profile_identifier=f"test.{uuid.uuid4()}",
        )
        session.add(row)
        await session.flush()
        return row.id
