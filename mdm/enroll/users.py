"""The people and devices an enrollment is for: the owner (created on first enrollment) and the
device an administrator re-enrolls."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.errors import InvalidArgument, NotFound
from mdm.db.models import Protocol, User
from mdm.enroll import store


async def get_or_create_user(session: AsyncSession, name: str, email: str | None) -> tuple[User, bool]:
    """Enrolling an unknown user creates the user (with the e-mail address, if given)."""
    user = await store.user_named(session, name)
    if user is not None:
        if email and not user.email:
            user.email = email
        return user, False
    return await store.add_user(session, name, email), True


_PROTOCOLS = {"ios": (Protocol.IOS, "an iOS"), "android": (Protocol.KES, "an Android (KES)")}


async def target_device(session: AsyncSession, device_id: int | None, platform: str = "ios") -> int | None:
    """The device an administrator re-enrolls with this enrollment (its identity may then take
    over that device's binding, whoever owns it); it must be of the enrollment's platform."""
    if device_id is None:
        return None
    protocol = await store.device_protocol(session, device_id)
    if protocol is None:
        raise NotFound(f"no device {device_id}", field="device_id")
    expected, name = _PROTOCOLS[platform]
    if protocol != expected.value:
        raise InvalidArgument(f"device {device_id} is not {name} device", field="device_id")
    return device_id
