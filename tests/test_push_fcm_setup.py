"""The FCM client's set-up and edges: the service-account file and its errors, the rate limits
(no 60-second window over the limit, bounded memory per device, waiting for the project quota),
the [push] proxy (HTTP CONNECT with Basic login to the fake over TLS), and no secret in logs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fcm_support import ConnectProxy, ManualClock, account_json, fcm_env, key_pem, write_account
from pki_support import key_pem as ec_key_pem
from pki_support import make_ca, make_leaf, pem

from mdm.push.fcm.limits import DeviceLimiter, ProjectLimiter, TokenBucket
from mdm.push.fcm.oauth import ServiceAccount, ServiceAccountError, parse_retry_after
from mdm.push.types import Outcome, ProxySettings, WakeTarget

TOKEN = "fcm-token-1"


def test_service_account_loads(tmp_path: Path) -> None:
    sa = ServiceAccount.load(write_account(tmp_path / "sa.json", "https://oauth2.googleapis.com/token"))
    assert (sa.project_id, sa.private_key_id) == ("mdm-test", "k1")
    assert "PRIVATE" not in repr(sa) and "mdm-test" in repr(sa)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "is not JSON (line 1"),
        ("[]", "is not a JSON object"),
        (json.dumps({"type": "authorized_user"}), "not a service account key"),
        (json.dumps(account_json("https://x/token", project_id="", client_email=None)),
         "lacks project_id, client_email"),
        (json.dumps(account_json("https://x/token", private_key="-----BEGIN PRIVATE KEY-----\nAAAA"
                                                             "\n-----END PRIVATE KEY-----\n")),
         "not an unencrypted PEM private key"),
        (json.dumps(account_json("https://x/token", private_key=ec_key_pem(
            ec.generate_private_key(ec.SECP256R1())).decode())), "not an RSA key"),
        (json.dumps(account_json("ftp://x/token")), "token_uri is not an http(s) URL"),
    ],
)
def test_service_account_errors_are_clear_and_never_echo_the_key(
        tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "sa.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ServiceAccountError) as err:
        ServiceAccount.load(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "PRIVATE KEY" not in str(err.value) and key_pem()[40:80] not in str(err.value)


def test_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_bucket_never_exceeds_the_limit_in_any_minute() -> None:
    clock = ManualClock()
    bucket = TokenBucket(240, clock)
    taken: list[float] = []
    for _ in range(300_000):  # try every 1 ms for 5 minutes
        if bucket.try_take() == 0.0:
            taken.append(clock.now)
        clock.now += 0.001
    j = 0
    for i, t in enumerate(taken):
        while taken[j] <= t - 60:
            j += 1
        assert i - j + 1 <= 240
    assert len(taken) >= 240 * 4 - 5  # and it does use its budget (float steps)


def test_device_limiter_refuses_with_the_wait_and_keeps_memory_bounded() -> None:
    clock = ManualClock()
    limiter = DeviceLimiter(4, max_devices=100, clock=clock)  # burst 1, then one per 20 s
    assert limiter.check("a") is None
    assert limiter.check("a") == pytest.approx(20.0)
    assert limiter.check("b") is None  # another device is not affected
    clock.now += 20
    assert limiter.check("a") is None
    for i in range(1000):
        limiter.check(f"d{i}")
    assert len(limiter) <= 100
    clock.now += 121
    limiter.check("x")
    assert len(limiter) == 1  # idle buckets expire


async def test_project_limiter_makes_senders_wait_without_polling() -> None:
    limiter = ProjectLimiter(240)  # a burst of 60, then 3 per second
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(63)))
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0
    assert limiter.waits == 3


async def test_device_limit_through_the_client(tmp_path: Path) -> None:
    async with fcm_env(tmp_path) as env:
        client = env.client(device_per_minute=4)
        assert (await client.send(WakeTarget(1, TOKEN))).outcome is Outcome.SENT
        r = await client.send(WakeTarget(1, TOKEN))
        assert (r.outcome, r.reason) == (Outcome.RETRY, "device_rate_limited")
        assert r.retry_after is not None and 19 < r.retry_after <= 20
        assert env.fake.send_requests == 1  # the refused one was not sent
        assert (await client.send(WakeTarget(2, "other"))).outcome is Outcome.SENT


def _tls(tmp_path: Path) -> tuple[object, Path]:
    import ssl

    ca = make_ca("FCM test CA")
    leaf = make_leaf(ca, "localhost")
    (tmp_path / "ca.pem").write_bytes(pem(ca.cert))
    (tmp_path / "server.pem").write_bytes(pem(leaf.cert) + ec_key_pem(leaf.key))  # type: ignore[arg-type]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "server.pem")
    return ctx, tmp_path / "ca.pem"


async def test_through_a_connect_proxy_with_login_over_tls(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ctx, ca_file = _tls(tmp_path)
    proxy = ConnectProxy(login="pxuser", password="px-s3cret:@/")
    await proxy.start()
    try:
        async with fcm_env(tmp_path, ssl_context=ctx) as env:
            assert env.fake.urls is not None and env.fake.urls.base_url.startswith("https://")
            settings = ProxySettings("127.0.0.1", proxy.port, "pxuser", "px-s3cret:@/")
            client = env.client(proxy=settings, ca_file=str(ca_file))
            r = await client.send(WakeTarget(1, TOKEN))
            assert r.outcome is Outcome.SENT
            port = env.fake.urls.base_url.rsplit(":", 1)[1]
            assert proxy.connects and all(c == f"127.0.0.1:{port}" for c in proxy.connects)
            # A wrong password: the proxy refuses; a clear, retried failure.
            wrong = env.client(proxy=ProxySettings("127.0.0.1", proxy.port, "pxuser", "nope"),
                               ca_file=str(ca_file))
            r = await wrong.send(WakeTarget(2, TOKEN))
            assert r.outcome is Outcome.RETRY and "ProxyError" in r.reason
            assert proxy.refused >= 1
            # An unreachable proxy.
            dead = env.client(proxy=ProxySettings("127.0.0.1", 9), ca_file=str(ca_file))
            r = await dead.send(WakeTarget(3, TOKEN))
            assert r.outcome is Outcome.RETRY
    finally:
        await proxy.stop()
    assert "px-s3cret" not in caplog.text and "px-s3cret" not in repr(settings)


async def test_no_secret_in_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with fcm_env(tmp_path, token_ttl=301) as env:
        client = env.client()
        await client.send(WakeTarget(1, TOKEN))
        access = await client.tokens.get()
        env.fake.expire_access_tokens()
        await client.send(WakeTarget(1, "t2"))
        env.fake.unregister("t3")
        await client.send(WakeTarget(1, "t3"))
        env.fake.oauth_mode = "invalid_grant"
        client.tokens.invalidate(await client.tokens.get())
        await client.send(WakeTarget(1, "t4"))
        assert "invalid_grant" in caplog.text  # the failure is logged ...
    key_body = "".join(key_pem().splitlines()[1:-1])
    for line in key_pem().splitlines()[1:-1]:
        assert line not in caplog.text  # ... never the key
    assert key_body[:32] not in caplog.text
    assert access not in caplog.text and "ya29." not in caplog.text
    assert "Bearer" not in caplog.text and "assertion" not in caplog.text



def test_the_fake_cli_names_a_bad_service_account(tmp_path: Path) -> None:
    from mdm.devfakes.fcm import main

    with pytest.raises(SystemExit, match="does not exist"):
        main(["--service-account", str(tmp_path / "missing.json")])
