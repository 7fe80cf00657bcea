"""The APNs contract fake answers like Apple's gateway; the client's certificate is checked."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from apns_support import TOKEN, apns_env, target

from mdm.bench import push as bench_push
from mdm.devfakes.apns import FakeApns
from mdm.devfakes.certs import identity, make_ca, push_certificate
from mdm.push.apns import ApnsClient
from mdm.push.types import Outcome

TOPIC = "com.apple.mgmt.External.test"
GOOD = {
    b":method": b"POST",
    b":path": b"/3/device/" + TOKEN.encode(),
    b"apns-topic": TOPIC.encode(),
    b"apns-push-type": b"mdm",
    b"apns-priority": b"10",
    b"apns-expiration": b"0",
    b"apns-id": str(uuid.uuid4()).encode(),
}


def request(**changes: bytes | None) -> list[tuple[bytes, bytes]]:
    values = dict(GOOD)
    for key, value in changes.items():
        name = key.replace("_", "-").encode() if not key.startswith("p_") else b":" + key[2:].encode()
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return list(values.items())


@pytest.mark.parametrize(
    ("changes", "body", "status", "reason"),
    [
        ({}, b'{"mdm":"m"}', 200, ""),
        ({"p_method": b"GET"}, b'{"mdm":"m"}', 405, "MethodNotAllowed"),
        ({"p_path": b"/2/device/ab"}, b'{"mdm":"m"}', 404, "BadPath"),
        ({"p_path": b"/3/device/"}, b'{"mdm":"m"}', 400, "MissingDeviceToken"),
        ({"p_path": b"/3/device/xyz"}, b'{"mdm":"m"}', 400, "BadDeviceToken"),
        ({"apns_topic": None}, b'{"mdm":"m"}', 400, "MissingTopic"),
        ({"apns_topic": b"com.apple.mgmt.other"}, b'{"mdm":"m"}', 400, "TopicDisallowed"),
        ({"apns_push_type": b"alert"}, b'{"mdm":"m"}', 400, "InvalidPushType"),
        ({"apns_priority": b"7"}, b'{"mdm":"m"}', 400, "BadPriority"),
        ({"apns_expiration": b"soon"}, b'{"mdm":"m"}', 400, "BadExpirationDate"),
        ({"apns_id": b"not-a-uuid"}, b'{"mdm":"m"}', 400, "BadMessageId"),
        ({}, b"", 400, "PayloadEmpty"),
        ({}, b'{"aps":{}}', 400, "PayloadEmpty"),
        ({}, b'{"mdm":"' + b"x" * 5000 + b'"}', 413, "PayloadTooLarge"),
    ],
)
def test_fake_validates_like_the_gateway(tmp_path: Path, changes, body, status, reason) -> None:
    from mdm.devfakes.certs import write_fake_certs

    certs = write_fake_certs(tmp_path)
    fake = FakeApns(push_ca=certs.push_ca, server_cert=certs.server_cert, server_key=certs.server_key)
    got_status, got_reason, _ = fake.answer(TOPIC, request(**changes), body)
    assert (got_status, got_reason) == (status, reason)


def test_fake_refuses_duplicate_headers(tmp_path: Path) -> None:
    from mdm.devfakes.certs import write_fake_certs

    certs = write_fake_certs(tmp_path)
    fake = FakeApns(push_ca=certs.push_ca, server_cert=certs.server_cert, server_key=certs.server_key)
    headers = [*request(), (b"apns-priority", b"5")]
    assert fake.answer(TOPIC, headers, b'{"mdm":"m"}')[:2] == (400, "DuplicateHeaders")


async def test_the_fake_takes_the_topic_from_the_client_certificate(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        other = env.other_identity("com.apple.mgmt.External.someone-else")
        # The certificate names its own topic: the fake sees the client's topic, not ours.
        client = ApnsClient(env.config(), other)
        try:
            assert (await client.send(target())).outcome is Outcome.SENT
        finally:
            await client.close()
        assert env.fake.accepted[0].topic == other.topic


async def test_a_certificate_from_another_ca_fails_the_handshake(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        stranger = identity(push_certificate(make_ca("not the push CA"), env.identity.topic))
        client = ApnsClient(env.config(), stranger)
        try:
            result = await client.send(target())
        finally:
            await client.close()
        assert result.outcome is Outcome.RETRY and result.reason
        assert env.fake.count == 0


async def test_a_reset_stream_is_retried_later(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client(connections=1)
        try:
            assert (await client.send(target())).outcome is Outcome.SENT
            env.fake.reset(1)
            result = await client.send(target())
            assert result.outcome is Outcome.RETRY and "reset" in result.reason
            assert (await client.send(target())).outcome is Outcome.SENT  # same connection
        finally:
            await client.close()
        assert env.fake.connections_seen == 1 and env.fake.refused_streams == 0


async def test_bench_push_measures_a_small_run() -> None:
    lines: list[str] = []
    report = await bench_push.run(3000, 200, 2, lines.append)
    assert report.outcomes == {"sent": 3000}
    assert report.pushes_per_second > 0 and report.p99_ms >= report.p50_ms > 0
    assert report.fake["accepted"] >= 3000 and report.fake["max_concurrent"] > 1
    assert report.fake_rss_mb > 0 and report.client_rss_after_mb > 0
    assert "pushes/s" in bench_push.render(report)


async def test_a_key_that_does_not_match_is_a_clear_failure(tmp_path: Path) -> None:
    from dataclasses import replace

    async with apns_env(tmp_path) as env:
        wrong = replace(env.identity, key_pem=env.other_identity().key_pem)
        client = ApnsClient(env.config(), wrong)
        try:
            result = await client.send(target())
        finally:
            await client.close()
        assert result.outcome is Outcome.RETRY and "do not load" in result.reason
        assert "PRIVATE KEY" not in result.reason


async def test_close_while_pushes_wait_answers_them(tmp_path: Path) -> None:
    import asyncio

    async with apns_env(tmp_path) as env:
        client = env.client(connections=1)
        pending = [asyncio.ensure_future(client.send(target())) for _ in range(5)]
        await asyncio.sleep(0)
        await client.close()
        results = await asyncio.gather(*pending)
        assert all(r.outcome in (Outcome.UNAVAILABLE, Outcome.RETRY) for r in results), results
