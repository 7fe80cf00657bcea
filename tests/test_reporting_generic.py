"""The generic HTTPS JSON transport against its contract fake (``mdm.devfakes.core_receiver``),
over real TLS sockets: mutual TLS, the HMAC signature and timestamp, every class of answer and
failure, and the factory with the internal-CA client certificate (the only tests here that touch
the database, so the only ones that run under PostgreSQL too)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ports import free_ports

from mdm.config import Config, ConfigError
from mdm.db.engine import Database
from mdm.devfakes.certs import Issued, make_ca, push_certificate, server_certificate
from mdm.devfakes.core_receiver import CoreReceiver, read_record
from mdm.pki import store as pki_store
from mdm.pki.ca import pem_chain
from mdm.pki.plugin import start_pki
from mdm.reporting import transports
from mdm.reporting.config import ReportingConfig
from mdm.reporting.seams import DeviceRecord, OutboundEvent, Outcome
from mdm.reporting.transport_generic import ClientIdentity, GenericTransport, retry_after
from mdm.server.context import ServerContext

PG = bool(os.environ.get("MDM_TEST_DATABASE_URL"))
engine_free = pytest.mark.skipif(PG, reason="no database: runs once, under SQLite")
KEY = b"k3y-of-the-core-link-0123456789"


@dataclass(frozen=True)
class Files:
    server_ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _files(directory: Path) -> Files:
    server_ca, client_ca, other = make_ca("core server CA"), make_ca("client CA"), make_ca("other CA")
    server: Issued = server_certificate(server_ca)
    client: Issued = push_certificate(client_ca)
    return Files(
        _write(directory / "server-ca.pem", server_ca.cert_pem),
        _write(directory / "server.pem", server.cert_pem),
        _write(directory / "server.key", server.key_pem, 0o600),
        _write(directory / "client-ca.pem", client_ca.cert_pem),
        _write(directory / "client.pem", client.cert_pem),
        _write(directory / "client.key", client.key_pem, 0o600),
        _write(directory / "other-ca.pem", other.cert_pem),
    )


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return _files(tmp_path)


@pytest.fixture
async def receiver(files: Files, tmp_path: Path) -> AsyncIterator[CoreReceiver]:
    fake = CoreReceiver(str(files.server_cert), str(files.server_key), str(files.client_ca), KEY,
                        record_file=tmp_path / "received.jsonl")
    await fake.start()
    yield fake
    await fake.stop()


def transport(files: Files, receiver: CoreReceiver, **kwargs: object) -> GenericTransport:
    options: dict[str, object] = {
        "ca_file": str(files.server_ca),
        "identity": ClientIdentity(str(files.client_cert), str(files.client_key)),
        "hmac_key": KEY,
        "timeout": 5.0,
    }
    options.update(kwargs)
    return GenericTransport(receiver.url, **options)  # type: ignore[arg-type]


def events(n: int, device: int | None = 7, start: int = 1) -> list[OutboundEvent]:
    record = None if device is None else DeviceRecord(
        id=device, protocol="ios", status="enrolled", name="iPad de Zoé", model="iPad13,1",
        os_version="17.4", serial_number="DMPX1", udid="00008030-001A", user="zoe",
        last_seen_at=datetime(2026, 12, 3, 11, 0, 0, 250000, tzinfo=UTC),
    )
    return [
        OutboundEvent(
            id=i, uuid=f"0190c2a4-0000-7000-8000-{i:012d}", type="command_completed", severity="info",
            created_at=datetime(2026, 12, 3, 12, 0, i % 60, tzinfo=UTC),
            body={"command": f"GUID-{i}", "command_type": "DeviceLock", "status": "completed"},
            device_id=device, user_id=3, device=record,
        )
        for i in range(start, start + n)
    ]


# ---- the contract, delivered -------------------------------------------------------------------


@engine_free
async def test_batch_is_signed_delivered_recorded_and_deduplicated(
    files: Files, receiver: CoreReceiver, tmp_path: Path
) -> None:
    client = transport(files, receiver)
    batch = events(3)
    try:
        first = await client.send(batch)
        again = await client.send(batch)
    finally:
        await client.aclose()
    assert first.outcome is Outcome.DELIVERED and again.outcome is Outcome.DELIVERED
    assert receiver.uuids == [e.uuid for e in batch]
    assert receiver.duplicates == 3
    sent = receiver.events[0]
    assert sent["created_at"] == "2026-12-03T12:00:01.000000Z"
    assert sent["device"]["name"] == "iPad de Zoé"
    assert sent["device"]["last_seen_at"] == "2026-12-03T11:00:00.250000Z"
    assert sent["body"] == {"command": "GUID-1", "command_type": "DeviceLock", "status": "completed"}
    assert [e["uuid"] for e in read_record(tmp_path / "received.jsonl")] == receiver.uuids


@engine_free
async def test_wrong_hmac_key_and_stale_timestamp_are_auth_failed(
    files: Files, receiver: CoreReceiver
) -> None:
    wrong = transport(files, receiver, hmac_key=b"another-key-entirely-0123456789")
    stale = transport(files, receiver, clock=lambda: time.time() - 600)
    unsigned = transport(files, receiver, hmac_key=None)
    try:
        results = [await t.send(events(2)) for t in (wrong, stale, unsigned)]
    finally:
        for t in (wrong, stale, unsigned):
            await t.aclose()
    assert [(r.outcome, r.reason) for r in results] == [(Outcome.RETRY, "auth_failed")] * 3
    assert receiver.refusals == ["bad signature", "X-MDM-Timestamp is more than 5 minutes away",
                                 "missing or malformed X-MDM-Timestamp"]
    assert receiver.events == []


@engine_free
async def test_mutual_tls_is_required(files: Files, receiver: CoreReceiver) -> None:
    anonymous = transport(files, receiver, identity=None)
    try:
        result = await anonymous.send(events(1))
    finally:
        await anonymous.aclose()
    # TLS 1.3: the receiver checks the client certificate after the client's handshake ended, so
    # the refusal reaches the client as an alert or a reset of the connection.
    assert result.outcome is Outcome.RETRY
    assert result.reason in ("tls_error", "connection_closed"), result
    assert receiver.events == [] and receiver.requests == 0


@engine_free
async def test_wrong_server_certificate_is_tls_error(files: Files, receiver: CoreReceiver) -> None:
    fooled = transport(files, receiver, ca_file=str(files.other_ca))
    try:
        result = await fooled.send(events(1))
    finally:
        await fooled.aclose()
    assert (result.outcome, result.reason) == (Outcome.RETRY, "tls_error")
    assert "certificate verify failed" in result.detail
    assert receiver.requests == 0


# ---- answers and failures -----------------------------------------------------------------------


@engine_free
async def test_5xx_429_retry_after_and_4xx(files: Files, receiver: CoreReceiver) -> None:
    client = transport(files, receiver)
    try:
        receiver.fail(1, 503)
        unavailable = await client.send(events(2))
        receiver.fail(1, 429, "7")
        throttled = await client.send(events(2))
        receiver.fail(1, 401)
        unauthorized = await client.send(events(2))
        receiver.fail(1, 400)
        refused = await client.send(events(2))
        ok = await client.send(events(2))
    finally:
        await client.aclose()
    assert (unavailable.outcome, unavailable.reason) == (Outcome.RETRY, "http_503")
    assert unavailable.retry_after is None
    assert (throttled.outcome, throttled.reason, throttled.retry_after) == (Outcome.RETRY, "http_429", 7.0)
    assert (unauthorized.outcome, unauthorized.reason) == (Outcome.RETRY, "auth_failed")
    assert (refused.outcome, refused.reason, refused.rejected) == (Outcome.REJECTED, "http_400", frozenset())
    assert ok.outcome is Outcome.DELIVERED and len(receiver.events) == 2


@engine_free
def test_retry_after_as_http_date() -> None:
    now = time.time()
    when = datetime.fromtimestamp(now, UTC) + timedelta(seconds=90)
    value = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after({"retry-after": value}, now=now) == pytest.approx(90, abs=1.5)
    assert retry_after({"retry-after": "99999999"}) == 3600.0
    assert retry_after({"retry-after": "soon"}) is None


@engine_free
async def test_garbage_and_connection_closed_are_retried(files: Files, receiver: CoreReceiver) -> None:
    client = transport(files, receiver)
    try:
        receiver.garbage(1)
        garbage = await client.send(events(2))
        receiver.close_connections(1)
        closed = await client.send(events(2))
        after = await client.send(events(2))
    finally:
        await client.aclose()
    assert (garbage.outcome, garbage.reason) == (Outcome.RETRY, "bad_response")
    assert "text/html" in garbage.detail
    assert (closed.outcome, closed.reason) == (Outcome.RETRY, "connection_closed"), closed
    assert after.outcome is Outcome.DELIVERED


@engine_free
async def test_partial_refusal_names_the_refused(files: Files, receiver: CoreReceiver) -> None:
    batch = events(3)
    receiver.refuse.add(batch[1].uuid)
    client = transport(files, receiver)
    try:
        result = await client.send(batch)
    finally:
        await client.aclose()
    assert result.outcome is Outcome.REJECTED and result.rejected == frozenset({batch[1].uuid})
    assert receiver.uuids == [batch[0].uuid, batch[2].uuid]


@engine_free
async def test_down_then_up_and_slow(files: Files, receiver: CoreReceiver) -> None:
    client = transport(files, receiver, timeout=0.5)
    try:
        await receiver.go_down()
        down = await client.send(events(1))
        await receiver.go_up()
        up = await client.send(events(1))
        receiver.delay = 2.0
        slow = await client.send(events(1, start=5))
    finally:
        await client.aclose()
    assert (down.outcome, down.reason) == (Outcome.RETRY, "connect_error"), down
    assert up.outcome is Outcome.DELIVERED
    assert (slow.outcome, slow.reason) == (Outcome.RETRY, "timeout")


@engine_free
async def test_secrets_never_logged(
    files: Files, receiver: CoreReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = transport(files, receiver)
    try:
        receiver.fail(1, 500)
        await client.send(events(2))
        receiver.garbage(1)
        await client.send(events(2))
        await client.send(events(2))
        bad = transport(files, receiver, hmac_key=b"another-key-entirely-0123456789")
        await bad.send(events(2))
        await bad.aclose()
    finally:
        await client.aclose()
    text = caplog.text + repr(client)
    assert KEY.decode() not in text and "another-key-entirely" not in text
    assert not re.search(r"[0-9a-f]{64}", text), "an HMAC signature was logged"


# ---- the factory and the internal-CA client certificate -----------------------------------------


def _section(config: Config, **values: object) -> ReportingConfig:
    section = ReportingConfig(**values)  # type: ignore[arg-type]
    config.extensions[ReportingConfig.name] = section
    return section


async def test_open_transport_refuses_bad_configuration(config: Config, db: Database, tmp_path: Path) -> None:
    ctx = ServerContext(config=config, db=db)
    assert await transports.open_transport(ctx) is None  # transport = "none"
    loose = _write(tmp_path / "loose.key", b"0123456789abcdef0123", 0o644)
    cases = {
        "reporting.url: required": {"transport": "generic"},
        "must be an https://": {"transport": "generic", "url": "http://core/events"},
        "hmac_key_file: ": {"transport": "generic", "url": "https://core/e", "hmac_key_file": "/nonexistent"},
        "must be 0600": {"transport": "generic", "url": "https://core/e", "hmac_key_file": str(loose)},
        "ksc_password_file: required": {"transport": "ksc", "url": "https://ksc:13299", "ksc_user": "u"},
        "go together": {"transport": "generic", "url": "https://core/e", "client_key_file": str(loose)},
    }
    for message, values in cases.items():
        _section(config, **values)
        with pytest.raises(ConfigError, match=re.escape(message)):
            await transports.open_transport(ctx)


async def test_internal_ca_client_certificate_issued_reused_renewed(
    config: Config, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = ServerContext(config=config, db=db)
    await start_pki(ctx)
    ca = ctx.services[transports.pki_services.CA]
    client_ca = _write(tmp_path / "internal-ca.pem", pem_chain(ca.chain))
    (tmp_path / "srv").mkdir()
    server_files = _files(tmp_path / "srv")
    key_file = _write(tmp_path / "hmac.key", KEY + b"\n", 0o600)
    fake = CoreReceiver(str(server_files.server_cert), str(server_files.server_key), str(client_ca), KEY)
    await fake.start()
    _section(config, transport="generic", url=fake.url, ca_file=str(server_files.server_ca),
             hmac_key_file=str(key_file))
    directory = config.data_path / "reporting"
    try:
        first = await transports.open_transport(ctx)
        assert first is not None
        assert (await first.send(events(2))).outcome is Outcome.DELIVERED
        await first.aclose()
        pem = (directory / "core-link.pem").read_bytes()
        assert stat.S_IMODE((directory / "core-link.key").stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificates(pem)[0]
        assert cert.issuer == ca.issuing.subject
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert config.hostname in sans.get_values_for_type(x509.DNSName) + [
            str(a) for a in sans.get_values_for_type(x509.IPAddress)]
        async with db.session() as session:
            record = await pki_store.by_serial(session, format(cert.serial_number, "x"))
        assert record is not None and record.status == "valid"

        again = await transports.open_transport(ctx)  # reused while valid
        assert again is not None
        await again.aclose()
        assert (directory / "core-link.pem").read_bytes() == pem

        # Inside the renewal window: a new certificate replaces it, the old one superseded.
        monkeypatch.setattr(transports, "RENEW_BEFORE", timedelta(days=400))
        renewed = await transports.open_transport(ctx)
        assert renewed is not None
        assert (await renewed.send(events(1, start=9))).outcome is Outcome.DELIVERED
        await renewed.aclose()
        new = x509.load_pem_x509_certificates((directory / "core-link.pem").read_bytes())[0]
        assert new.serial_number != cert.serial_number
        assert new.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo) != \
            cert.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        async with db.session() as session:
            old = await pki_store.by_serial(session, format(cert.serial_number, "x"))
        assert old is not None and old.status == "superseded"
    finally:
        await fake.stop()
    assert len(fake.events) == 3


@engine_free
async def test_receiver_runs_as_a_process_with_control_and_record(files: Files, tmp_path: Path) -> None:
    port, control = free_ports(2)
    key_file = _write(tmp_path / "hmac.key", KEY + b"\n", 0o600)
    record = tmp_path / "record.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm.devfakes.core_receiver", "--port", str(port),
        "--cert", str(files.server_cert), "--key", str(files.server_key), "--client-ca", str(files.client_ca),
        "--hmac-key-file", str(key_file), "--record", str(record), "--control-port", str(control),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line.decode().strip() == f"core receiver: https://127.0.0.1:{port}/events"
        client = GenericTransport(f"https://127.0.0.1:{port}/events", ca_file=str(files.server_ca),
                                  identity=ClientIdentity(str(files.client_cert), str(files.client_key)),
                                  hmac_key=KEY, timeout=5.0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{control}") as http:
            failing = await http.post("/control", json={"action": "fail", "n": 1, "status": 429,
                                                        "retry_after": 3})
            throttled = await client.send(events(2))
            delivered = await client.send(events(2))
            stats = (await http.get("/stats")).json()
            bad = await http.post("/control", json={"action": "explode"})
        await client.aclose()
    finally:
        process.terminate()
        await process.wait()
    assert failing.status_code == 200 and bad.status_code == 400
    assert (throttled.reason, throttled.retry_after) == ("http_429", 3.0)
    assert delivered.outcome is Outcome.DELIVERED
    assert stats["events"] == 2 and stats["answers"] == {"429": 1, "200": 1}
    assert [e["uuid"] for e in read_record(record)] == [e.uuid for e in events(2)]


@engine_free
async def test_sent_bodies_do_not_wait_for_the_garbage_collector(
    files: Files, receiver: CoreReceiver
) -> None:
    """httpx and httpcore keep every request in a reference cycle that only a collection frees,
    and the server runs with rare collections (``GC_THRESHOLDS``): a batch's encoded body must
    not be held by that cycle, or the server grows by a body per batch during a catch-up."""
    import gc
    import tracemalloc

    from mdm.reporting import transport_generic

    client = transport(files, receiver)
    await client.send(events(3))
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(8):
            assert (await client.send(events(100, start=1000 * (i + 1)))).outcome is Outcome.DELIVERED
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        gc.enable()
        await client.aclose()
    only_here = [tracemalloc.Filter(True, transport_generic.__file__)]
    diff = after.filter_traces(only_here).compare_to(before.filter_traces(only_here), "filename")
    growth = sum(s.size_diff for s in diff)
    body = len(transport_generic.batch_body(events(100)))
    assert growth < 2 * body, (growth, body)
