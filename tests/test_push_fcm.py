"""The FCM HTTP v1 client against the FCM contract fake over real sockets: the OAuth2 token
(fetched once, refreshed ahead of expiry, one refresh for concurrent senders), the wake-up
message, each error of Google's table and its Outcome, Retry-After, the token endpoint's
failures, network failures."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from fcm_support import fcm_env, write_account

from mdm.push.fcm.oauth import ServiceAccount
from mdm.push.types import Outcome, WakeTarget

TOKEN = "dXNlcjEyMzQ1:APA91bH-test_token.0123456789"


def target(token: str = TOKEN, device_id: int = 1) -> WakeTarget:
    return WakeTarget(device_id=device_id, token=token)


async def test_send_is_a_data_only_wake_up_and_the_token_is_reused(tmp_path: Path) -> None:
    async with fcm_env(tmp_path) as env:
        client = env.client(ttl_seconds=3600, collapse_key="wake")
        results = [await client.send(target(f"tok-{i}", i)) for i in range(3)]
        assert [r.outcome for r in results] == [Outcome.SENT] * 3
        assert all((r.message_id or "").startswith("projects/mdm-test/messages/") for r in results)
        assert env.fake.token_requests == 1 and client.tokens.fetches == 1
        got = env.fake.accepted[0]
        assert got.token == "tok-0" and got.data == {"mdm": "wake"}
        assert got.android == {"priority": "HIGH", "ttl": "3600s", "collapse_key": "wake"}
        assert client.stats.sent == 3 and client.stats.last_success is not None


async def test_expires_sets_the_ttl(tmp_path: Path) -> None:
    async with fcm_env(tmp_path) as env:
        client = env.client()
        await client.send(target(), expires=datetime.now(UTC) + timedelta(seconds=120))
        ttl = int(env.fake.accepted[0].android["ttl"].rstrip("s"))
        assert 110 <= ttl <= 120
        await client.send(target("other"), expires=datetime.now(UTC) - timedelta(seconds=5))
        assert env.fake.accepted[1].android["ttl"] == "0s"


async def test_token_refreshed_ahead_of_expiry(tmp_path: Path) -> None:
    # The client refreshes 300 s before expiry: a 301 s token is good for one second.
    async with fcm_env(tmp_path, token_ttl=301) as env:
        client = env.client()
        assert (await client.send(target())).outcome is Outcome.SENT
        assert (await client.send(target("b"))).outcome is Outcome.SENT
        assert env.fake.token_requests == 1
        await asyncio.sleep(1.1)
        assert (await client.send(target("c"))).outcome is Outcome.SENT
        assert env.fake.token_requests == 2
        assert env.fake.rejected == []  # never sent with a stale token


async def test_concurrent_senders_share_one_refresh(tmp_path: Path) -> None:
    async with fcm_env(tmp_path) as env:
        client = env.client()
        results = await asyncio.gather(*(client.send(target(f"t{i}", i)) for i in range(40)))
        assert {r.outcome for r in results} == {Outcome.SENT}
        assert env.fake.token_requests == 1
        assert len(env.fake.accepted) == 40


async def test_an_expired_access_token_is_refreshed_once_on_401(tmp_path: Path) -> None:
    async with fcm_env(tmp_path) as env:
        client = env.client()
        await client.send(target())
        env.fake.expire_access_tokens()
        result = await client.send(target("b"))
        assert result.outcome is Outcome.SENT
        assert env.fake.token_requests == 2
        assert env.fake.rejected == [(401, "UNAUTHENTICATED")]


@pytest.mark.parametrize(
    ("arrange", "outcome", "reason", "status"),
    [
        (lambda f: f.unregister(TOKEN), Outcome.INVALID_TOKEN, "UNREGISTERED", 404),
        (lambda f: f.sender_mismatch(TOKEN), Outcome.INVALID_TOKEN, "SENDER_ID_MISMATCH", 403),
        (lambda f: f.third_party_auth.add(TOKEN), Outcome.CREDENTIALS, "THIRD_PARTY_AUTH_ERROR", 401),
        (lambda f: f.fail_next(1, "INVALID_ARGUMENT"), Outcome.REJECTED, "INVALID_ARGUMENT", 400),
        (lambda f: f.fail_next(1, "UNAVAILABLE"), Outcome.RETRY, "UNAVAILABLE", 503),
        (lambda f: f.fail_next(1, "INTERNAL"), Outcome.RETRY, "INTERNAL", 500),
        (lambda f: f.quota_exceeded(1, retry_after=None), Outcome.RETRY, "QUOTA_EXCEEDED", 429),
    ],
)
async def test_each_fcm_error_has_its_outcome(tmp_path: Path, arrange: object, outcome: Outcome,
                                              reason: str, status: int) -> None:
    async with fcm_env(tmp_path) as env:
        client = env.client()
        arrange(env.fake)  # type: ignore[operator]
        result = await client.send(target())
        assert (result.outcome, result.reason, result.status) == (outcome, reason, status)
        assert env.fake.accepted == []
        assert env.fake.token_requests == 1  # THIRD_PARTY_AUTH_ERROR is not our token: no refresh
        assert client.stats.failed[reason] == 1


async def test_retry_after_seconds_and_http_date(tmp_path: Path) -> None:
    async with fcm_env(tmp_path) as env:
        client = env.client()
        env.fake.quota_exceeded(1, retry_after="42")
        r = await client.send(target())
        assert (r.outcome, r.retry_after) == (Outcome.RETRY, 42.0)
        when = datetime.now(UTC) + timedelta(seconds=90)
        env.fake.fail_next(1, "UNAVAILABLE", retry_after=format_datetime(when, usegmt=True))
        r = await client.send(target())
        assert r.outcome is Outcome.RETRY and r.retry_after is not None
        assert 85 <= r.retry_after <= 90
        # The failures were for the next sends only.
        assert (await client.send(target())).outcome is Outcome.SENT


async def test_a_project_the_account_may_not_send_to_is_a_credentials_failure(tmp_path: Path) -> None:
    async with fcm_env(tmp_path) as env:
        env.fake.add_account(env.account.client_email, "someone-else", env.account.key.public_key())
        result = await env.client().send(target())
        assert (result.outcome, result.reason, result.status) == (
            Outcome.CREDENTIALS, "PERMISSION_DENIED", 403)


@pytest.mark.parametrize(
    ("mode", "outcome", "status"),
    [("down", Outcome.RETRY, 503), ("garbage", Outcome.RETRY, 200),
     ("unauthorized", Outcome.CREDENTIALS, 401), ("invalid_grant", Outcome.CREDENTIALS, 400)],
)
async def test_token_endpoint_failures(tmp_path: Path, mode: str, outcome: Outcome,
                                       status: int) -> None:
    async with fcm_env(tmp_path) as env:
        env.fake.oauth_mode = mode  # type: ignore[assignment]
        client = env.client()
        result = await client.send(target())
        assert (result.outcome, result.status) == (outcome, status)
        assert "token endpoint" in result.reason
        # A failed refresh is remembered briefly: waiting senders do not hammer the endpoint; a
        # refused grant opens the circuit (no push until the account is replaced or reset).
        results = await asyncio.gather(*(client.send(target(f"t{i}")) for i in range(10)))
        later = Outcome.UNAVAILABLE if outcome is Outcome.CREDENTIALS else outcome
        assert {r.outcome for r in results} == {later}
        assert env.fake.token_requests == 1 and env.fake.send_requests == 0
        assert client.circuit_open is (outcome is Outcome.CREDENTIALS)
        env.fake.oauth_mode = "ok"
        await asyncio.sleep(2.1)  # the cool-down
        client.reset_circuit()
        assert (await client.send(target())).outcome is Outcome.SENT


async def test_refused_credentials_open_the_circuit_until_the_account_is_replaced(
        tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from fcm_support import account_json, key_pem

    async with fcm_env(tmp_path) as env:
        client = env.client()
        env.fake.third_party_auth.add(TOKEN)
        assert (await client.send(target())).outcome is Outcome.CREDENTIALS
        r = await client.send(target("fine"))
        assert (r.outcome, r.reason) == (Outcome.UNAVAILABLE, "circuit open: THIRD_PARTY_AUTH_ERROR")
        assert env.fake.send_requests == 1
        # A new key for the same project: taken while running, the circuit closes.
        new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        renewed = ServiceAccount.from_mapping(account_json(
            env.fake.urls.token_url, private_key=key_pem(new_key), private_key_id="k2"))  # type: ignore[union-attr]
        env.fake.add_service_account(renewed)
        client.replace_account(renewed)
        assert not client.circuit_open
        assert (await client.send(target("fine"))).outcome is Outcome.SENT
        assert env.fake.token_requests == 2
        with pytest.raises(ValueError, match="re-register"):
            client.replace_account(ServiceAccount.from_mapping(
                account_json("https://x/token", project_id="other")))
        assert client.stats.by_outcome == {"credentials": 1, "unavailable": 1, "sent": 1}


async def test_a_key_the_token_endpoint_does_not_know_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    async with fcm_env(tmp_path) as env:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        env.fake.add_account(env.account.client_email, "mdm-test", other.public_key())
        result = await env.client().send(target())
        assert (result.outcome, result.status) == (Outcome.CREDENTIALS, 400)
        assert "invalid_grant" in result.reason


async def test_unreachable_endpoints_and_timeouts_are_retried(tmp_path: Path) -> None:
    async with fcm_env(tmp_path) as env:
        # Token endpoint unreachable.
        sa = ServiceAccount.load(write_account(tmp_path / "dead.json", "http://127.0.0.1:9/token"))
        from mdm.push.config import FcmConfig
        from mdm.push.fcm.client import FcmClient

        dead = FcmClient(FcmConfig(base_url=env.fake.urls.base_url), sa)  # type: ignore[union-attr]
        env.clients.append(dead)
        r = await dead.send(target())
        assert r.outcome is Outcome.RETRY and "unreachable" in r.reason

        # The send endpoint accepts the connection and never answers.
        writers: list[asyncio.StreamWriter] = []

        async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await reader.read()  # never answers; returns when the connection closes

        server = await asyncio.start_server(stall, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            client = env.client(base_url=f"http://127.0.0.1:{port}", timeout_seconds=0.3)
            client.tokens = env.client().tokens  # a working token endpoint
            started = time.monotonic()
            r = await client.send(target())
            assert (r.outcome, r.reason) == (Outcome.RETRY, "timeout")
            assert time.monotonic() - started < 3
        finally:
            server.close()
            for w in writers:
                w.close()
            await server.wait_closed()

        # The send endpoint is gone.
        client = env.client()
        await client.tokens.get()
        await env.fake.stop()
        r = await client.send(target())
        assert r.outcome is Outcome.RETRY and r.reason.startswith("network error")


async def test_malformed_tokens_are_invalid_without_a_request(tmp_path: Path) -> None:
    async with fcm_env(tmp_path) as env:
        client = env.client()
        for bad in ("", "a b", "x" * 5000, "tok\n"):
            r = await client.send(target(bad))
            assert r.outcome is Outcome.INVALID_TOKEN
        assert env.fake.token_requests == 0 and env.fake.send_requests == 0


async def test_the_fake_refuses_what_fcm_refuses(tmp_path: Path) -> None:
    async with fcm_env(tmp_path) as env:
        client = env.client()
        access = await client.tokens.get()
        url = f"{env.fake.urls.base_url}/v1/projects/mdm-test/messages:send"  # type: ignore[union-attr]
        async with httpx.AsyncClient() as http:
            auth = {"Authorization": f"Bearer {access}"}
            notif = {"message": {"token": TOKEN, "notification": {"title": "x"}, "data": {"a": "b"}}}
            bad_ttl = {"message": {"token": TOKEN, "data": {"a": "b"}, "android": {"ttl": "7 days"}}}
            for body in ({}, {"message": {"data": {"a": "b"}}}, notif, bad_ttl,
                         {"message": {"token": TOKEN, "data": {"a": 1}}}):
                resp = await http.post(url, json=body, headers=auth)
                err = resp.json()["error"]
                assert resp.status_code == 400 and err["status"] == "INVALID_ARGUMENT"
                assert err["details"][0]["errorCode"] == "INVALID_ARGUMENT"
            resp = await http.post(url, json={"message": {"token": TOKEN, "data": {"a": "b"}}})
            assert resp.status_code == 401 and resp.json()["error"]["status"] == "UNAUTHENTICATED"
            resp = await http.post(env.fake.urls.token_url,  # type: ignore[union-attr]
                                   data={"grant_type": "client_credentials"})
            assert resp.status_code == 400 and resp.json()["error"] == "unsupported_grant_type"


async def test_accepted_wake_ups_reach_on_message(tmp_path: Path) -> None:
    woken: list[tuple[str, dict[str, str]]] = []

    async def on_message(token: str, data: dict[str, str]) -> None:
        woken.append((token, data))

    async with fcm_env(tmp_path, on_message=on_message) as env:
        await env.client().send(target())
        assert woken == [(TOKEN, {"mdm": "wake"})]
