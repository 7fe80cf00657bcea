"""The KES agent simulator on its own: the enrollment package it reads, its TLS client pinning the
server's key on the real ``kes`` listener (a key that does not match the pin is refused before a
byte is sent), the retry of a request with the same bytes after a dropped connection, the picture
it takes, and the commands it executes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import ssl as ssl_mod
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import listener_url
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm.config import Config
from mdm.kes.messages import parse
from mdm.pki.ca import self_signed
from mdm.pki.keys import generate_key
from mdm.pki.slots import load_slot_certificate
from mdm.server.runtime import Server
from mdm.sim.kes import http, media, protocol
from mdm.sim.kes.commands import Executor, Outcome
from mdm.sim.kes.facts import AndroidFacts
from mdm.sim.kes.package import EnrollmentPackage, PackageError
from mdm.sim.kes.state import AgentState


def _pin_of(config: Config) -> str:
    cert = load_slot_certificate(config.certs_dir, "M")
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _package(host: str, port: int, pin: str, **extra: Any) -> bytes:
    return json.dumps({"v": 1, "type": "kes-enrollment", "server": {"host": host, "port": port},
                       "spki_sha256": pin, "token": "0" * 32, **extra}).encode()


def test_package_parse_and_refusals() -> None:
    pin = base64.b64encode(b"\x01" * 32).decode()
    package = EnrollmentPackage.parse(_package("mdm.example.com", 13292, pin, url="https://x/e/abc"))
    assert (package.host, package.port, package.pins, package.url) == (
        "mdm.example.com", 13292, (b"\x01" * 32,), "https://x/e/abc")
    with_reserve = EnrollmentPackage.parse(_package("h", 1, pin, spki_sha256_reserve=base64.b64encode(
        b"\x02" * 32).decode()))
    assert with_reserve.pins == (b"\x01" * 32, b"\x02" * 32)
    for bad in (b"not json", b"[]", _package("h", 1, pin).replace(b'"v": 1', b'"v": 2'),
                _package("h", 1, base64.b64encode(b"short").decode()),
                json.dumps({"v": 1, "type": "kes-enrollment", "spki_sha256": pin}).encode()):
        with pytest.raises(PackageError):
            EnrollmentPackage.parse(bad)


async def test_pinned_connection_accepts_the_m_key_refuses_another(server: Server, config: Config) -> None:
    port = urlsplit(listener_url(server, "kes")).port
    assert port is not None
    good = http.decode_pin(_pin_of(config))
    conn = http.PinnedConnection("127.0.0.1", port, (good,), http.tls_context())
    response = await conn.request("GET", "/kes/v1/info")
    assert response.status in (200, 404)  # reached the server's HTTP layer
    assert conn.handshakes == 1
    await conn.request("GET", "/kes/v1/info")
    assert conn.handshakes == 1, "the connection is kept alive"
    await conn.close()

    wrong = bytes(a ^ 0xFF for a in good)
    bad = http.PinnedConnection("127.0.0.1", port, (wrong,), http.tls_context())
    with pytest.raises(http.PinMismatch):
        await bad.request("POST", "/kes/v1/register", b"{}")
    assert not bad.connected
    # The reserve's pin is accepted when the M pin is not the first one.
    either = http.PinnedConnection("127.0.0.1", port, (wrong, good), http.tls_context())
    assert (await either.request("GET", "/kes/v1/info")).status in (200, 404)
    await either.close()


async def test_request_resent_with_the_same_bytes_after_a_dropped_connection() -> None:
    """A server that drops the first connection after reading the request: the client connects
    again and sends the very same bytes (so the same request id), once."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        seen.append(head + await reader.readexactly(length))
        if len(seen) == 1:
            writer.transport.abort()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    key = generate_key("ec")
    cert = self_signed(key, x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "t")]), days=1)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (Path(tmp) / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        server_ctx = ssl_mod.create_default_context(ssl_mod.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = srv.sockets[0].getsockname()[1]
    pin = http.spki_sha256(cert.public_bytes(serialization.Encoding.DER))
    try:
        conn = http.PinnedConnection("127.0.0.1", port, (pin,), http.tls_context(), timeout=5)
        body = b'{"v":1,"request_id":"5f0e1c2a-0000-4000-8000-000000000001"}'
        response = await conn.request("POST", "/kes/v1/sync", body)
        assert response.status == 200
        assert len(seen) == 2 and seen[0] == seen[1] and seen[0].endswith(body)
        assert (conn.handshakes, conn.resent) == (2, 1)
        await conn.close()
    finally:
        srv.close()
        await srv.wait_closed()


def test_mugshot_is_a_valid_png() -> None:
    data = media.png(32, 16, random.Random(1))
    assert data.startswith(media.PNG_SIGNATURE)
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + payload) & 0xFFFFFFFF == crc
        chunks.append((kind, payload))
        pos += 12 + length
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (width, height, depth, colour) == (32, 16, 8, 2)
    assert len(zlib.decompress(chunks[1][1])) == height * (1 + 3 * width)
    assert media.png(rng=random.Random(1)) != media.png(rng=random.Random(2))


async def test_executor_results_and_state() -> None:
    apk = b"PK\x03\x04 an android package"
    uploads: list[tuple[str, bytes, str]] = []

    async def upload(cid: str, data: bytes, ctype: str) -> None:
        uploads.append((cid, data, ctype))

    async def download(url: str) -> bytes:
        return apk

    state = AgentState(AndroidFacts.generate(random.Random(3)))
    ex = Executor(state, upload, download, random.Random(3))
    assert (await ex.run({"id": "1", "type": "lock", "args": {"message": "lost"}})).result == {"locked": True}
    assert state.locked and state.lock_message == "lost"
    await ex.run({"id": "2", "type": "unlock"})
    assert not state.locked
    located = await ex.run({"id": "3", "type": "locate"})
    assert located.result is not None and set(located.result) == {"latitude", "longitude", "accuracy_m", "at"}
    shot = await ex.run({"id": "4", "type": "mugshot"})
    assert uploads and uploads[0][0] == "4" and uploads[0][2] == "image/png"
    assert shot.result is not None and shot.result["sha256"] == hashlib.sha256(uploads[0][1]).hexdigest()
    assert not shot.report, "a mugshot completes by its picture, not by a result"
    good = hashlib.sha256(apk).hexdigest()
    ok = await ex.run({"id": "5", "type": "install_apk",
                       "args": {"url": "https://a.example/app.apk", "sha256": good, "package": "com.x"}})
    assert ok.ok and any(a.package == "com.x" for a in state.facts.apps)
    bad = await ex.run({"id": "6", "type": "install_apk",
                        "args": {"url": "https://a.example/y.apk", "sha256": "0" * 64, "package": "com.y"}})
    assert bad.error is not None and bad.error[0] == "sha256_mismatch"
    assert not any(a.package == "com.y" for a in state.facts.apps)
    assert (await ex.run({"id": "7", "type": "remove_apk", "args": {"package": "com.x"}})).ok
    missing = await ex.run({"id": "8", "type": "remove_apk", "args": {"package": "com.x"}})
    assert missing.error is not None and missing.error[0] == "not_installed"
    inv = await ex.run({"id": "9", "type": "inventory"})
    assert inv.result is not None
    assert inv.result["inventory"]["device_info"]["android_id"] == state.facts.android_id
    assert {"package": "com.android.chrome", "name": "Chrome", "version": "126.0.6478.71"} in inv.result[
        "inventory"]["apps"]["items"]
    unknown = await ex.run({"id": "10", "type": "format_c"})
    assert unknown.error is not None and unknown.error[0] == "unsupported_command"
    assert not state.gone
    await ex.run({"id": "11", "type": "wipe"})
    assert state.gone and state.wiped == "full"


def test_policy_applied_with_local_settings_and_locks() -> None:
    state = AgentState(AndroidFacts.generate(random.Random(4)), local_settings={"a": "local", "b": "local"})
    state.apply_policy({"version": "v7", "settings": {"a": {"value": "policy", "locked": False},
                                                      "b": {"value": "policy", "locked": True},
                                                      "c": {"value": 3, "locked": False}}})
    assert state.settings_in_force == {"a": "local", "b": "policy", "c": 3}
    assert state.applied_policy_version == "v7"


def test_agent_messages_validate_against_the_protocol_schemas() -> None:
    """What the agent sends passes the server's own schemas (mdm/kes/schemas)."""
    state = AgentState(AndroidFacts.generate(random.Random(5)), local_settings={"camera": False})
    state.apply_policy({"version": "v1", "settings": {}})
    parse("register", protocol.encode(protocol.register(state, "ab" * 16)))
    csr = "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 64 + "\n-----END CERTIFICATE REQUEST-----\n"
    parse("certificate", protocol.encode(protocol.certificate(csr, "ab" * 16, state.facts.android_id)))
    parse("certificate", protocol.encode(protocol.certificate(csr, None, state.facts.android_id)))
    parse("unenroll", protocol.encode(protocol.unenroll("command")))
    done = Outcome("0b7e6c1c-5d1f-4c57-9a3e-2f1f0c1e9d11", "locate",
                   result={"latitude": 1.0, "longitude": 2.0, "accuracy_m": 5.0,
                           "at": "2026-12-03T10:00:00+00:00"})
    failed = Outcome("0b7e6c1c-5d1f-4c57-9a3e-2f1f0c1e9d12", "install_apk", error=("sha256_mismatch", "no"))
    report = protocol.Report([protocol.result(done), protocol.result(failed)], [], True)
    message = protocol.sync(state, report, wait=30)
    assert parse("sync", protocol.encode(message)) == message
    assert message["applied_policy_version"] == "v1" and message["local_settings"] == {"camera": False}
    assert [r["status"] for r in message["results"]] == ["completed", "failed"]
