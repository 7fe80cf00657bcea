"""PKI over real TLS: client certificates on the KES listener (accepted, revoked, expired, foreign)
and through ClientCertVerifier; server-certificate replacement served on the next handshake,
the reserve slot during rollover, and SIGHUP reload of a real ``mdm serve``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import sys
from datetime import timedelta

import httpx
import pytest
from conftest import listener_url
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pki_support import (
    NOW,
    Issuer,
    cli,
    cli_subprocess,
    client_context,
    exchange,
    key_pem,
    make_ca,
    make_leaf,
    p12,
    served_certificate,
    server_verdict,
)

from mdm.pki import services as pki_services
from mdm.pki import services as plugin
from mdm.pki.issuance import CertificateRequest, issue
from mdm.pki.slots import load_slot_certificate
from mdm.pki.tables import CertType
from mdm.pki.trust import IdentityRejected
from mdm.plugins import PLUGINS
from mdm.server.runtime import Server


def port_of(server: Server, listener: str) -> int:
    return int(listener_url(server, listener, tls=True).rsplit(":", 1)[1])


async def issue_identity(server: Server, common_name: str = "alice") -> Issuer:
    async with server.ctx.db.transaction() as session:
        ident = await issue(
            session,
            plugin.source(server.ctx),
            CertificateRequest(type=CertType.MOBILE, common_name=common_name),
        )
    assert ident.key is not None
    return Issuer(ident.certificate, ident.key)


async def kes_response(server: Server, config, identity: Issuer | None, *, tls12: bool = False) -> bytes:
    ctx = client_context(config.ca_dir / "root.pem", identity, tls12=tls12)
    _, data = await exchange(port_of(server, "kes"), ctx)
    return data


async def assert_kes_refuses(server: Server, config, identity: Issuer, why: str) -> None:
    """Refused over a real socket (no HTTP answer), and the KES context's verdict names ``why``."""
    for tls12 in (False, True):
        try:
            data = await kes_response(server, config, identity, tls12=tls12)
        except (ssl.SSLError, ConnectionError):
            data = b""
        assert data == b"", f"KES answered a refused certificate (tls12={tls12}): {data[:60]!r}"
    verdict = server_verdict(
        server.ctx.tls["kes"].front, client_context(config.ca_dir / "root.pem", identity)
    )
    assert verdict is not None and re.search(why, verdict, re.I), verdict


async def assert_kes_answers(server: Server, config, identity: Issuer, code: str) -> None:
    """The handshake completes (so the device gets a code) and the KES handlers refuse the
    certificate with ``code`` (``[pki] kes_tls_crl_check`` is off by default)."""
    root = config.ca_dir / "root.pem"
    assert server_verdict(server.ctx.tls["kes"].front, client_context(root, identity)) is None
    for tls12 in (False, True):
        ctx = client_context(config.ca_dir / "root.pem", identity, tls12=tls12)
        async with httpx.AsyncClient(base_url=listener_url(server, "kes"), verify=ctx, timeout=30) as client:
            answer = await client.post("/kes/v1/unenroll", json={"v": 1, "request_id": "tls-test-0001"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, code), answer.text


async def test_certificate_issued_now_authenticates(server: Server, config) -> None:
    alice = await issue_identity(server)
    data = await kes_response(server, config, alice)
    assert data.startswith(b"HTTP/1.1 "), data[:80]
    assert (
        server_verdict(server.ctx.tls["kes"].front, client_context(config.ca_dir / "root.pem", alice)) is None
    )
    verified = plugin.verifier(server.ctx).verify(alice.cert)
    assert verified.serial_hex == format(alice.cert.serial_number, "x")
    assert verified.subject_cn == "alice"
    # one-way TLS (a device before enrollment) still works on the KES port
    assert (await kes_response(server, config, None)).startswith(b"HTTP/1.1 ")


async def test_revoked_certificate_is_refused_on_kes_and_by_the_verifier(
    server: Server, config, api: httpx.AsyncClient
) -> None:
    alice = await issue_identity(server)
    serial = format(alice.cert.serial_number, "x")
    assert (await kes_response(server, config, alice)).startswith(b"HTTP/1.1 ")
    r = await api.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "key_compromise"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "revoked"
    await assert_kes_answers(server, config, alice, "certificate_revoked")
    with pytest.raises(IdentityRejected) as rejected:
        plugin.verifier(server.ctx).verify(alice.cert)
    assert rejected.value.reason == "revoked"
    # another certificate from the same CA is unaffected
    bob = await issue_identity(server, "bob")
    assert (await kes_response(server, config, bob)).startswith(b"HTTP/1.1 ")


async def test_expired_certificate_is_refused(server: Server, config) -> None:
    ca = pki_services.ca(server.ctx)
    old = ca.issue_with_key(
        common_name="old-phone",
        days=1,
        client=True,
        not_before=NOW - timedelta(days=30),
        not_after=NOW - timedelta(days=1),
    )
    assert old.key is not None
    expired = Issuer(old.certificate, old.key)
    await assert_kes_answers(server, config, expired, "certificate_expired")
    with pytest.raises(IdentityRejected) as rejected:
        plugin.verifier(server.ctx).verify(expired.cert)
    assert rejected.value.reason == "expired"


async def test_foreign_ca_certificate_is_refused(server: Server, config) -> None:
    foreign_root = make_ca("Foreign Root")
    foreign = make_leaf(foreign_root, "mallory", sans=[], eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    await assert_kes_refuses(server, config, foreign, "unable to get local issuer")
    with pytest.raises(IdentityRejected) as rejected:
        plugin.verifier(server.ctx).verify(foreign.cert)
    assert rejected.value.reason == "untrusted"
    # A certificate that copies our issuing CA's name but is signed by another key is foreign too.
    impostor_ca = make_ca(
        pki_services.ca(server.ctx).issuing.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    )
    impostor = make_leaf(impostor_ca, "eve", sans=[], eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    await assert_kes_refuses(server, config, impostor, "signature failure|unable to get local issuer")


async def test_replaced_server_certificate_is_served_on_next_handshake(
    server: Server, config, tmp_path
) -> None:
    root = config.ca_dir / "root.pem"
    admin, kes = port_of(server, "admin"), port_of(server, "kes")
    before_c = await served_certificate(admin, root)
    before_m = await served_certificate(kes, root)
    # a connection opened before the replacement keeps working afterwards
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", admin, ssl=client_context(root), server_hostname="localhost"
    )

    ca = pki_services.ca(server.ctx)
    for slot in ("C", "M"):
        new = ca.issue_with_key(
            common_name="localhost", days=90, server=True, sans=["localhost", "127.0.0.1"]
        )
        assert new.key is not None
        container = tmp_path / f"{slot}.p12"
        container.write_bytes(p12(Issuer(new.certificate, new.key), ca.chain))
        r = await cli(
            "certs",
            "set",
            "-t",
            slot,
            "-i",
            str(container),
            "-p",
            "secret",
            "--data-dir",
            str(config.data_path),
        )
        assert r.code == 0, r.err
        assert f"slot {slot} " in r.out and "replaced" in r.out
        assert format(new.certificate.serial_number, "x") in r.out
        assert load_slot_certificate(config.certs_dir, slot) == new.certificate

    assert server.reload() == []  # what SIGHUP / `mdm reload` does
    after_c = await served_certificate(admin, root)
    after_m = await served_certificate(kes, root)
    assert after_c.serial_number != before_c.serial_number
    assert after_c == load_slot_certificate(config.certs_dir, "C")
    assert after_m == load_slot_certificate(config.certs_dir, "M")
    assert after_m.serial_number != before_m.serial_number

    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_reserve_slot_serves_while_main_slot_is_mid_replacement(
    server: Server, config, tmp_path
) -> None:
    root = config.ca_dir / "root.pem"
    admin = port_of(server, "admin")
    main_cert = load_slot_certificate(config.certs_dir, "C")
    reserve_cert = load_slot_certificate(config.certs_dir, "CR")
    assert (await served_certificate(admin, root)) == main_cert

    # The state between the two renames of a replacement: new key, old certificate.
    key_file = config.certs_dir / "C.key"
    original_key = key_file.read_bytes()
    ca = pki_services.ca(server.ctx)
    other = ca.issue_with_key(common_name="localhost", days=30, server=True, sans=["localhost"])
    assert other.key is not None
    key_file.write_bytes(key_pem(other.key))
    assert server.reload() == []
    assert (await served_certificate(admin, root)) == reserve_cert  # devices are not cut off

    key_file.write_bytes(original_key)
    assert server.reload() == []
    assert (await served_certificate(admin, root)) == main_cert

    # An expired main certificate also falls back to the reserve.
    ca = pki_services.ca(server.ctx)
    stale = ca.issue_with_key(
        common_name="localhost",
        days=1,
        server=True,
        sans=["localhost", "127.0.0.1"],
        not_before=NOW - timedelta(days=10),
        not_after=NOW - timedelta(days=1),
    )
    from mdm.pki.slots import install_slot

    assert stale.key is not None
    install_slot(config.certs_dir, "C", stale.key, [stale.certificate, *ca.chain])
    assert server.reload() == []
    assert (await served_certificate(admin, root)) == reserve_cert


# ---- a real `mdm serve` and SIGHUP ----------------------------------------------------------------
async def test_certs_set_signals_a_running_server_which_serves_the_new_certificate(config, tmp_path) -> None:
    # Port 0 everywhere: the server picks free ports itself and logs them, so a port chosen here
    # cannot be taken by a parallel test before the server binds it (a CI flake).
    names = ("MDM_IOS_PORT", "MDM_KES_PORT", "MDM_WEB_HTTP_PORT", "MDM_WEB_HTTPS_PORT", "MDM_ADMIN_PORT")
    ports = dict.fromkeys(names, "0")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MDM_")}, **ports}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mdm",
        "serve",
        "--data-dir",
        str(config.data_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None

        async def until(pattern: str) -> None:
            while not any(re.search(pattern, line) for line in lines):
                raw = await proc.stderr.readline()  # type: ignore[union-attr]
                assert raw, "server exited:\n" + "\n".join(lines)
                lines.append(raw.decode())

        await asyncio.wait_for(until(r"listening: kes"), 60)
        pid_file = config.data_path / "mdm.pid"
        for _ in range(100):
            if pid_file.exists():
                break
            await asyncio.sleep(0.05)
        served = (re.search(r"listening: kes on https://\S+:(\d+)", line) for line in lines)
        (kes,) = (int(m[1]) for m in served if m)
        root = config.ca_dir / "root.pem"
        before = await served_certificate(kes, root)

        from mdm.pki.ca import CertificateAuthority

        ca = CertificateAuthority.load(config.ca_dir)
        new = ca.issue_with_key(
            common_name="localhost", days=60, server=True, sans=["localhost", "127.0.0.1"]
        )
        assert new.key is not None
        container = tmp_path / "m.p12"
        container.write_bytes(p12(Issuer(new.certificate, new.key), ca.chain, "pw"))
        r = await asyncio.to_thread(
            cli_subprocess,
            "certs",
            "set",
            "-t",
            "M",
            "-i",
            str(container),
            "-p",
            "pw",
            "--data-dir",
            str(config.data_path),
        )
        assert r.code == 0, r.err
        assert f"asked the running server (pid {proc.pid}) to reload" in r.out
        await asyncio.wait_for(until(r"reloaded TLS certificate for kes"), 30)
        after = await served_certificate(kes, root)
        assert after.serial_number == new.certificate.serial_number != before.serial_number
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_start_up_with_an_expired_main_slot_serves_the_reserve(config) -> None:
    from mdm.pki.ca import CertificateAuthority
    from mdm.pki.slots import install_slot
    from mdm.server.runtime import open_context
    from mdm.server.tls import TLSFilesError

    ca = CertificateAuthority.load(config.ca_dir)
    stale = ca.issue_with_key(
        common_name="localhost",
        days=1,
        server=True,
        sans=["localhost"],
        not_before=NOW - timedelta(days=10),
        not_after=NOW - timedelta(days=1),
    )
    assert stale.key is not None
    install_slot(config.certs_dir, "M", stale.key, [stale.certificate, *ca.chain])
    ctx = await open_context(config)
    server = Server(ctx, PLUGINS)
    await server.start()
    try:
        served = await served_certificate(port_of(server, "kes"), config.ca_dir / "root.pem")
        assert served == load_slot_certificate(config.certs_dir, "MR")
    finally:
        await server.stop()
    # other problems with the main slot stop the start-up with a precise message
    fresh = ca.issue_with_key(common_name="localhost", days=30, server=True, sans=["localhost"])
    assert fresh.key is not None
    install_slot(config.certs_dir, "M", fresh.key, [fresh.certificate, *ca.chain])
    (config.certs_dir / "M.key").write_bytes(b"not a key")
    ctx = await open_context(config)
    server = Server(ctx, PLUGINS)
    with pytest.raises(TLSFilesError, match=r"slot M: .* unusable"):
        await server.start()
