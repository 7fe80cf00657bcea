"""The Open API transport against its contract fake (``mdm.devfakes.ksc_openapi``) over real TLS:
the KSCBasic login header byte for byte, one session for many publishes, re-login on 401, the
KLMDM_* attributes typed per the params container rules, refusals and retries, no secret in the
logs. No database: these run once, under SQLite."""

from __future__ import annotations

import base64
import logging
import os
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from mdm.devfakes.certs import make_ca, server_certificate
from mdm.devfakes.ksc_openapi import KscOpenApiFake
from mdm.reporting.ksc_params import check_container, event_body
from mdm.reporting.seams import DeviceRecord, OutboundEvent, Outcome
from mdm.reporting.transport_ksc import KscTransport, kscbasic

pytestmark = pytest.mark.skipif(bool(os.environ.get("MDM_TEST_DATABASE_URL")),
                                reason="no database: runs once, under SQLite")
USER, PASSWORD, DOMAIN = "reporter", 'pä$$ "w0rd"', "CORP"


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    ca, other = make_ca("Open API server CA"), make_ca("someone else")
    server = server_certificate(ca)
    paths = [tmp_path / n for n in ("ca.pem", "server.pem", "server.key", "other.pem")]
    for path, data in zip(paths, (ca.cert_pem, server.cert_pem, server.key_pem, other.cert_pem), strict=True):
        path.write_bytes(data)
    return paths[0], paths[1], paths[2], paths[3]


@pytest.fixture
async def ksc(tls: tuple[Path, Path, Path, Path]) -> AsyncIterator[KscOpenApiFake]:
    fake = KscOpenApiFake(USER, PASSWORD, DOMAIN, True, str(tls[1]), str(tls[2]))
    await fake.start()
    yield fake
    await fake.stop()


def client(ksc: KscOpenApiFake, ca: Path, **kwargs: object) -> KscTransport:
    options: dict[str, object] = {"user": USER, "password": PASSWORD, "domain": DOMAIN, "internal": True,
                                  "ca_file": str(ca), "timeout": 5.0}
    options.update(kwargs)
    return KscTransport(ksc.base_url, **options)  # type: ignore[arg-type]


def events(n: int, devices: tuple[int | None, ...] = (7,), start: int = 1) -> list[OutboundEvent]:
    out = []
    for i in range(start, start + n):
        device = devices[i % len(devices)]
        record = None if device is None else DeviceRecord(
            id=device, protocol="kes", status="enrolled", name=f"Pixel {device}", model="Pixel 8",
            os_version="14", serial_number=f"SN{device}", udid=None, user="zoe",
            last_seen_at=datetime(2026, 12, 3, 11, 0, 5, 999999, tzinfo=UTC),
        )
        out.append(OutboundEvent(
            id=i, uuid=f"0190c2a4-0000-7000-8000-{i:012d}", type="command_failed", severity="warning",
            created_at=datetime(2026, 12, 3, 12, 0, i % 60, 500000, tzinfo=UTC),
            body={"command": f"GUID-{i}", "command_type": "Wipe", "status": "failed", "info": None,
                  "attempts": 2**40, "ratio": 0.5, "tags": ["a", "b"], "nested": {"ok": True}},
            device_id=device, user_id=3 if device else None, device=record,
        ))
    return out


async def test_login_header_is_exact(ksc: KscOpenApiFake, tls: tuple[Path, ...]) -> None:
    transport = client(ksc, tls[0])
    try:
        result = await transport.send(events(1))
    finally:
        await transport.aclose()
    assert result.outcome is Outcome.DELIVERED
    user = base64.b64encode(USER.encode()).decode()
    password = base64.b64encode(PASSWORD.encode("utf-8")).decode()
    assert (user, password) == ("cmVwb3J0ZXI=", "cMOkJCQgIncwcmQi")
    assert ksc.login_headers == [
        f'KSCBasic user="{user}", pass="{password}", domain="Q09SUA==", internal="1"'
    ]
    assert kscbasic("a", "b") == 'KSCBasic user="YQ==", pass="Yg==", domain="", internal="0"'


async def test_one_login_for_many_publishes_in_order_per_device(
    ksc: KscOpenApiFake, tls: tuple[Path, ...]
) -> None:
    transport = client(ksc, tls[0], concurrency=3)
    batch = events(12, devices=(1, 2, 3, None))
    try:
        first = await transport.send(batch[:6])
        second = await transport.send(batch[6:])
    finally:
        await transport.aclose()
    assert first.outcome is Outcome.DELIVERED and second.outcome is Outcome.DELIVERED
    assert ksc.logins == 1 and transport.logins == 1
    assert sorted(ksc.event_ids) == sorted(e.uuid for e in batch)
    for device in (1, 2, 3, None):
        sent = [e.uuid for e in batch if e.device_id == device]
        got = [i for i in ksc.event_ids if i in sent]
        assert got == sent, f"device {device} out of order"


async def test_relogin_once_on_401(ksc: KscOpenApiFake, tls: tuple[Path, ...]) -> None:
    transport = client(ksc, tls[0], concurrency=4)
    try:
        assert (await transport.send(events(4, devices=(1, 2, 3, 4)))).outcome is Outcome.DELIVERED
        ksc.expire_sessions()
        after = await transport.send(events(8, devices=(1, 2, 3, 4), start=10))
        ksc.expire_sessions()
        ksc.reject_logins = True
        refused = await transport.send(events(1, start=30))
    finally:
        await transport.aclose()
    assert after.outcome is Outcome.DELIVERED
    assert ksc.logins == 2, "the four concurrent 401s share one login"
    assert (refused.outcome, refused.reason) == (Outcome.RETRY, "auth_failed")
    assert len(ksc.event_ids) == 12


async def test_wrong_password_is_auth_failed(ksc: KscOpenApiFake, tls: tuple[Path, ...]) -> None:
    transport = client(ksc, tls[0], password="nope")
    try:
        result = await transport.send(events(2))
    finally:
        await transport.aclose()
    assert (result.outcome, result.reason) == (Outcome.RETRY, "auth_failed")
    assert ksc.calls == 0 and ksc.published == []


async def test_klmdm_attributes_present_and_typed(ksc: KscOpenApiFake, tls: tuple[Path, ...]) -> None:
    transport = client(ksc, tls[0])
    event = events(1)[0]
    try:
        assert (await transport.send([event])).outcome is Outcome.DELIVERED
    finally:
        await transport.aclose()
    [published] = ksc.published
    assert published.event_type == "KLMDM_EV_COMMAND_FAILED"
    assert published.birth_time == "2026-12-03T12:00:01Z"
    body = published.body
    assert body["KLMDM_EVENT_ID"] == event.uuid
    assert body["KLMDM_EVENT_TIME"] == {"type": "datetime", "value": "2026-12-03T12:00:01Z"}
    assert body["KLMDM_DEVICE_ID"] == {"type": "long", "value": 7}
    assert body["KLMDM_USER_ID"] == {"type": "long", "value": 3}
    assert body["KLMDM_DEVICE_LAST_SEEN"] == {"type": "datetime", "value": "2026-12-03T11:00:05Z"}
    assert {k: body[k] for k in ("KLMDM_DEVICE_PROTOCOL", "KLMDM_DEVICE_NAME", "KLMDM_DEVICE_MODEL",
                                 "KLMDM_DEVICE_OS_VERSION", "KLMDM_DEVICE_SERIAL", "KLMDM_DEVICE_USER",
                                 "KLMDM_DEVICE_STATUS")} == {
        "KLMDM_DEVICE_PROTOCOL": "kes", "KLMDM_DEVICE_NAME": "Pixel 7", "KLMDM_DEVICE_MODEL": "Pixel 8",
        "KLMDM_DEVICE_OS_VERSION": "14", "KLMDM_DEVICE_SERIAL": "SN7", "KLMDM_DEVICE_USER": "zoe",
        "KLMDM_DEVICE_STATUS": "enrolled"}
    assert "KLMDM_DEVICE_UDID" not in body  # None is left out: nothing is null in a container
    command = (body["KLMDM_CMD_GUID"], body["KLMDM_CMD_TYPE"], body["KLMDM_CMD_STATUS"])
    assert command == ("GUID-1", "Wipe", "failed")
    assert body["KLMDM_EVENT_BODY"] == {"type": "params", "value": {
        "command": "GUID-1", "command_type": "Wipe", "status": "failed",
        "attempts": {"type": "long", "value": 2**40}, "ratio": {"type": "double", "value": 0.5},
        "tags": ["a", "b"], "nested": {"type": "params", "value": {"ok": True}}}}
    assert check_container(body) == ""


async def test_params_error_refuses_only_that_event(ksc: KscOpenApiFake, tls: tuple[Path, ...]) -> None:
    batch = events(4, devices=(1, 2))
    ksc.refuse.add(batch[1].uuid)
    transport = client(ksc, tls[0])
    try:
        result = await transport.send(batch)
    finally:
        await transport.aclose()
    assert result.outcome is Outcome.REJECTED and result.rejected == frozenset({batch[1].uuid})
    assert sorted(ksc.event_ids) == sorted(e.uuid for e in batch if e is not batch[1])
    assert ksc.errors[0]["module"] == "KLPAR"


async def test_unavailable_retries_and_resend_is_deduplicated(
    ksc: KscOpenApiFake, tls: tuple[Path, ...]
) -> None:
    batch = events(6, devices=(1,))
    transport = client(ksc, tls[0], concurrency=1)
    try:
        assert (await transport.send(batch[:2])).outcome is Outcome.DELIVERED
        ksc.fail(1, 503, "5", after=3)
        failed = await transport.send(batch)
        again = await transport.send(batch)
    finally:
        await transport.aclose()
    assert (failed.outcome, failed.reason, failed.retry_after) == (Outcome.RETRY, "http_503", 5.0)
    assert "3 of 6 published" in failed.detail
    assert again.outcome is Outcome.DELIVERED
    assert ksc.event_ids == [e.uuid for e in batch] and ksc.duplicates == 2 + 3


async def test_wrong_server_certificate_is_tls_error(ksc: KscOpenApiFake, tls: tuple[Path, ...]) -> None:
    transport = client(ksc, tls[3])
    try:
        result = await transport.send(events(1))
    finally:
        await transport.aclose()
    assert (result.outcome, result.reason) == (Outcome.RETRY, "tls_error")
    assert "certificate verify failed" in result.detail and ksc.logins == 0


async def test_fake_refuses_what_the_product_refuses(ksc: KscOpenApiFake, tls: tuple[Path, ...]) -> None:
    body = event_body(events(1)[0])
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(tls[0]))) as http:
        bad_login = await http.post(ksc.base_url + "/api/v1.0/login",
                                    headers={"Authorization": 'KSCBasic user="!!", pass="x"'})
        login = await http.post(ksc.base_url + "/api/v1.0/login",
                                headers={"Authorization": kscbasic(USER, PASSWORD, DOMAIN, True)})
        session = {"X-KSC-Session": login.json()["PxgRetVal"]}
        url = ksc.base_url + "/api/v1.0/EventNotificationsApi.PublishEvent"
        answers = [
            await http.post(url, headers=session, json={"wstrEventType": "X", "tmBirthTime": when,
                                                         "pEventBody": pbody})
            for when, pbody in (
                ("2026-12-03T12:00:00Z", {**body, "KLMDM_DEVICE_NAME": None}),
                ("2026-12-03T12:00:00Z", {**body, "KLMDM_DEVICE_ID": 2**40}),
                ("2026-12-03 12:00:00", body),
            )
        ]
        no_session = await http.post(url, json={})
    assert bad_login.status_code == 401 and login.status_code == 200
    assert [a.status_code for a in answers] == [500, 500, 500]
    assert all(a.json()["PxgError"]["module"] == "KLPAR" for a in answers)
    assert "null is not allowed" in answers[0].json()["PxgError"]["message"]
    assert no_session.status_code == 401 and ksc.published == []


async def test_secrets_never_logged(ksc: KscOpenApiFake, tls: tuple[Path, ...],
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    transport = client(ksc, tls[0])
    try:
        await transport.send(events(2))
        ksc.expire_sessions()
        ksc.fail(1, 500)
        await transport.send(events(2))
        ksc.reject_logins = True
        ksc.expire_sessions()
        await transport.send(events(2))
    finally:
        await transport.aclose()
    text = caplog.text + repr(transport)
    secrets = [PASSWORD, base64.b64encode(PASSWORD.encode()).decode(), *ksc.sessions_issued]
    assert ksc.logins >= 2
    assert not [s for s in secrets if s in text]
