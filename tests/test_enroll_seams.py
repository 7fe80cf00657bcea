"""Enrollment reaches a platform only through its ``ProfileBuilder``: what the builder is given,
what the enrollment records of it, and what happens without one."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from enroll_support import APNS_TOML
from sqlalchemy import select

from mdm.config import Config
from mdm.core.errors import Conflict
from mdm.enroll import service
from mdm.enroll.profiles import prepare
from mdm.enroll.seams import (
    Env,
    IssuedCredential,
    Prepared,
    ProfileBuilders,
    ProfileContent,
)
from mdm.enroll.tables import Enrollment
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import InternalCASource


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


@dataclass(frozen=True)
class FakePrepared:
    push_topic: str | None = "com.example.fake.topic"
    warnings: tuple[str, ...] = ("fake warning",)


class FakeBuilder:
    def __init__(self) -> None:
        self.built: list[ProfileContent] = []

    def prepare(self, env: Env) -> Prepared:
        return FakePrepared()

    def build(self, env: Env, prepared: Prepared, content: ProfileContent) -> bytes:
        assert isinstance(prepared, FakePrepared)
        self.built.append(content)
        return b"fake profile " + content.identifier.encode()


def _env(config: Config, builders: ProfileBuilders) -> Env:
    ca = CertificateAuthority.load(config.ca_dir)
    return Env(config, ca, InternalCASource(ca), builders=builders)


async def test_the_builder_gets_the_issued_identity_and_its_topic_is_recorded(config: Config, db) -> None:
    fake = FakeBuilder()
    env = _env(config, ProfileBuilders({"ios": fake}))
    prepared = prepare(env)
    async with db.transaction() as session:
        created = await service.create_file(env, session, prepared, user="alice", created_by="test")
    assert created.warnings == ("fake warning",)
    [content] = fake.built
    assert created.profile == b"fake profile " + content.identifier.encode()
    assert isinstance(content.credential, IssuedCredential)
    assert content.user == "alice" and content.roots == (env.ca.root,)
    async with db.session() as session:
        e = await session.scalar(select(Enrollment))
    assert e is not None
    assert e.topic == "com.example.fake.topic" and e.mdm_profile_identifier == content.identifier
    assert e.cert_serial == format(content.credential.certificate.serial_number, "x")
    assert content.profile_uuid == e.uuid.upper() and content.enrollment_id == e.id


def test_without_a_builder_the_platform_cannot_be_enrolled(config: Config) -> None:
    env = _env(config, ProfileBuilders())
    with pytest.raises(Conflict, match="cannot build ios enrollment profiles") as info:
        prepare(env)
    assert info.value.status == 409


def test_a_platform_registers_once() -> None:
    builders = ProfileBuilders()
    builders.register("ios", FakeBuilder())
    assert "ios" in builders and "android" not in builders
    with pytest.raises(ValueError, match="twice"):
        builders.register("ios", FakeBuilder())
