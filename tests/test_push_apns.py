"""The APNs client against the contract fake: real sockets, real mutual TLS, real HTTP/2."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apns_support import TOKEN, ConnectProxy, apns_env, target
from cryptography import x509

from mdm.push.topic import topic_of
from mdm.push.types import Outcome, ProxySettings

FIXTURES = Path(__file__).parent / "fixtures" / "apple" / "nanomdm"


async def test_push_is_sent_with_apple_headers_and_body(tmp_path: Path) -> None:
    seen: list[tuple[str, str, dict[str, object]]] = []
    async with apns_env(tmp_path, on_push=lambda t, topic, body: seen.append((t, topic, body))) as env:
        client = env.client()
        try:
            result = await client.send(target(magic="M-1\"x"))
            assert result.outcome is Outcome.SENT and result.status == 200 and result.message_id
            expires = datetime.now(UTC) + timedelta(hours=1)
            assert (await client.send(target(), expires=expires)).outcome is Outcome.SENT
            epoch = datetime.fromtimestamp(0, UTC)
            assert (await client.send(target(), expires=epoch)).outcome is Outcome.SENT
        finally:
            await client.close()
        first, second, third = env.fake.accepted
        assert first.topic == env.identity.topic and first.token == TOKEN and first.priority == 10
        assert first.body == {"mdm": "M-1\"x"}
        now = datetime.now(UTC).timestamp()
        assert abs(first.expiration - (now + 7 * 24 * 3600)) < 60
        assert abs(second.expiration - expires.timestamp()) < 2
        assert third.expiration == 0
        assert seen[0] == (TOKEN, env.identity.topic, {"mdm": "M-1\"x"})
        assert client.stats.sent == 3 and client.stats.last_success is not None


async def test_streams_follow_the_servers_settings(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client(connections=1)
        try:
            assert (await client.send(target())).outcome is Outcome.SENT  # 1 stream, then raised
            results = await asyncio.gather(*(client.send(target()) for _ in range(200)))
        finally:
            await client.close()
        assert all(r.outcome is Outcome.SENT for r in results)
        assert env.fake.max_concurrent > 1
        assert env.fake.connections_seen == 1  # no churn


@pytest.mark.parametrize(
    ("setup", "outcome", "reason", "status"),
    [
        (lambda f: f.unregister(TOKEN), Outcome.INVALID_TOKEN, "Unregistered", 410),
        (lambda f: f.bad_token(TOKEN), Outcome.INVALID_TOKEN, "BadDeviceToken", 400),
        (lambda f: f.token_topic(TOKEN, "com.apple.mgmt.other"), Outcome.INVALID_TOKEN,
         "DeviceTokenNotForTopic", 400),
        (lambda f: f.throttle(1), Outcome.RETRY, "TooManyRequests", 429),
        (lambda f: f.fail(1, 500), Outcome.RETRY, "InternalServerError", 500),
        (lambda f: f.fail(1, 503), Outcome.RETRY, "ServiceUnavailable", 503),
    ],
)
async def test_answers_become_outcomes(tmp_path: Path, setup, outcome, reason, status) -> None:
    async with apns_env(tmp_path) as env:
        setup(env.fake)
        client = env.client()
        try:
            result = await client.send(target())
        finally:
            await client.close()
        assert (result.outcome, result.reason, result.status) == (outcome, reason, status)
        assert client.stats.failed == {reason: 1}
        assert not client.circuit_open


async def test_bad_token_format_is_never_sent(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client()
        try:
            for token in ("xyz", "abc", "ab" * 101, "", "ab/cd"):
                result = await client.send(target(token=token))
                assert result.outcome is Outcome.REJECTED
                assert result.reason == "BadDeviceToken (not hex)"
        finally:
            await client.close()
        assert env.fake.requests == 0 and env.fake.connections_seen == 0


async def test_credentials_refused_open_the_circuit_until_replaced(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        env.fake.refuse("BadCertificate")
        client = env.client()
        try:
            result = await client.send(target())
            expected = (Outcome.CREDENTIALS, "BadCertificate", 403)
            assert (result.outcome, result.reason, result.status) == expected
            assert client.circuit_open and client.circuit_reason == "BadCertificate"
            requests = env.fake.requests
            again = await client.send(target())
            assert again.outcome is Outcome.UNAVAILABLE and "BadCertificate" in again.reason
            assert env.fake.requests == requests  # no network I/O
            env.fake.refuse("")
            await client.replace_identity(env.other_identity())
            assert not client.circuit_open
            assert (await client.send(target())).outcome is Outcome.SENT
            env.fake.refuse("Forbidden")
            assert (await client.send(target())).outcome is Outcome.CREDENTIALS
            env.fake.refuse("")
            client.reset_circuit()
            assert (await client.send(target())).outcome is Outcome.SENT
        finally:
            await client.close()


async def test_replace_identity_same_topic_without_restart(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client(connections=1)
        try:
            assert (await client.send(target())).outcome is Outcome.SENT
            # streams in flight on the old connection while the identity changes
            pending = [asyncio.ensure_future(client.send(target())) for _ in range(50)]
            await asyncio.sleep(0)
            await client.replace_identity(env.other_identity())
            assert (await client.send(target())).outcome is Outcome.SENT  # on a new connection
            with pytest.raises(ValueError, match="re-enroll"):
                await client.replace_identity(env.other_identity("com.apple.mgmt.External.other"))
            assert client.topic == env.identity.topic
            assert env.fake.connections_seen == 2
            assert all(r.outcome is Outcome.SENT for r in await asyncio.gather(*pending))
        finally:
            await client.close()


async def test_goaway_reason_is_logged_and_pending_pushes_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client(connections=1)
        try:
            assert (await client.send(target())).outcome is Outcome.SENT
            env.fake.goaway("Shutdown")
            with caplog.at_level(logging.INFO, logger="mdm.push.apns"):
                results = await asyncio.gather(*(client.send(target()) for _ in range(20)))
        finally:
            await client.close()
        assert all(r.outcome is Outcome.SENT for r in results), results
        assert env.fake.count == 21 and env.fake.connections_seen == 2
        assert any("GOAWAY" in r.message and "Shutdown" in r.message for r in caplog.records)


async def test_dropped_connection_reconnects_and_a_retried_push_arrives(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client(connections=1)
        try:
            assert (await client.send(target())).outcome is Outcome.SENT
            env.fake.stall(0.5)
            pending = asyncio.ensure_future(client.send(target()))
            await asyncio.sleep(0.1)
            env.fake.drop_connections()
            lost = await pending
            assert lost.outcome is Outcome.RETRY and "connection" in lost.reason
            await asyncio.sleep(0.7)  # the reconnect backoff after an early death
            assert (await client.send(target())).outcome is Outcome.SENT  # the caller's retry
        finally:
            await client.close()
        assert env.fake.count == 2 and env.fake.connections_seen == 2


async def test_stall_times_out_and_garbage_kills_only_the_connection(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client(connections=1, timeout_seconds=0.3)
        try:
            assert (await client.send(target())).outcome is Outcome.SENT
            env.fake.stall(0.5)
            stalled = await client.send(target())
            assert stalled.outcome is Outcome.RETRY and stalled.reason.startswith("timeout")
            await asyncio.sleep(0.3)
            env.fake.garbage(1)
            broken = await client.send(target())
            assert broken.outcome is Outcome.RETRY and "protocol error" in broken.reason
            assert (await client.send(target())).outcome is Outcome.RETRY  # backoff: no storm
            await asyncio.sleep(1.0)
            assert (await client.send(target())).outcome is Outcome.SENT
        finally:
            await client.close()


async def test_unknown_ca_refuses_the_gateway(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client(ca_file=str(env.certs.push_ca))  # not the gateway's CA
        try:
            result = await client.send(target())
        finally:
            await client.close()
        assert result.outcome is Outcome.RETRY and "certificate" in result.reason.lower()
        assert env.fake.requests == 0


async def test_proxy_with_login(tmp_path: Path) -> None:
    proxy = ConnectProxy("alice", "s3cret-pw")
    await proxy.start()
    try:
        async with apns_env(tmp_path) as env:
            good = env.client(ProxySettings("127.0.0.1", proxy.port, "alice", "s3cret-pw"))
            try:
                assert (await good.send(target())).outcome is Outcome.SENT
            finally:
                await good.close()
            assert proxy.tunnels == 1
            bad = env.client(ProxySettings("127.0.0.1", proxy.port, "alice", "wrong-pw-42"))
            try:
                result = await bad.send(target())
                assert result.outcome is Outcome.RETRY
                assert "407" in result.reason and "wrong login or password" in result.reason
                assert "wrong-pw-42" not in result.reason
                # backoff: the next one answers at once without a new CONNECT
                refused = proxy.refused
                assert (await bad.send(target())).outcome is Outcome.RETRY
                assert proxy.refused == refused
            finally:
                await bad.close()
    finally:
        await proxy.stop()


async def test_unreachable_proxy(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client(ProxySettings("127.0.0.1", 1, "bob", "hunter2"))
        try:
            result = await client.send(target())
        finally:
            await client.close()
        assert result.outcome is Outcome.RETRY and "unreachable" in result.reason
        assert "hunter2" not in result.reason


def test_real_apple_certificate_yields_its_topic() -> None:
    cert = x509.load_pem_x509_certificates((FIXTURES / "push.pem").read_bytes())[0]
    assert topic_of(cert).startswith("com.apple.mgmt.External.")
    assert cert.not_valid_after_utc < datetime.now(UTC)


async def test_bodies_wait_for_the_flow_control_window(tmp_path: Path) -> None:
    async with apns_env(tmp_path, initial_window=8) as env:
        client = env.client(connections=1)
        try:
            results = await asyncio.gather(*(client.send(target(magic=f"magic-{i:04}")) for i in range(20)))
        finally:
            await client.close()
        assert all(r.outcome is Outcome.SENT for r in results), results
        assert sorted(a.body["mdm"] for a in env.fake.accepted) == [f"magic-{i:04}" for i in range(20)]
