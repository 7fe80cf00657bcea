"""`mdm certs set` (klsetsrvcert): legacy and modern PKCS#12, every check with its own message,
nothing written on failure, pinned devices counted, the event recorded."""

from __future__ import annotations

import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from pki_support import NOW, Issuer, cli, cli_subprocess, make_ca, make_leaf, p12, pem, rc2_p12
from sqlalchemy import select

from mdm.db.models import Device, Event, Protocol
from mdm.pki.certcheck import fingerprint
from mdm.pki.slots import load_slot_certificate, load_slot_chain
from mdm.pki.tables import IssuedCertificateRecord


@pytest.fixture(scope="module")
def foreign() -> tuple[Issuer, Issuer]:
    root = make_ca("Example Root CA")
    return root, make_ca("Example Server CA", root)


def slot_bytes(config, slot: str) -> tuple[bytes, bytes]:
    return (config.certs_dir / f"{slot}.pem").read_bytes(), (config.certs_dir / f"{slot}.key").read_bytes()


async def set_slot(config, slot: str, data: bytes, password: str | None = "secret", tmp: Path | None = None):
    path = (tmp or config.data_path) / f"in-{slot}.p12"
    path.write_bytes(data)
    args = ["certs", "set", "-t", slot, "-i", str(path), "--data-dir", str(config.data_path)]
    if password is not None:
        args += ["-p", password]
    return await cli(*args)


async def test_modern_container_with_foreign_chain_replaces_the_slot(config, foreign, db) -> None:
    root, intermediate = foreign
    leaf = make_leaf(intermediate, "localhost")
    old = load_slot_certificate(config.certs_dir, "web")
    async with db.transaction() as session:  # as recorded when a server started
        session.add(
            IssuedCertificateRecord(
                serial=format(old.serial_number, "x"),
                type="server",
                subject="CN=localhost",
                source="internal",
                status="valid",
                not_before=old.not_valid_before_utc,
                not_after=old.not_valid_after_utc,
                pem="-",
            )
        )
    r = await set_slot(config, "web", p12(leaf, [intermediate.cert, root.cert]))
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    assert "slot web (web server (HTTPS one-time links)) replaced" in r.out
    assert f"old: {old.subject.rfc4514_string()}, serial {format(old.serial_number, 'x')}" in r.out
    assert (
        f"new: {leaf.cert.subject.rfc4514_string()}, serial {format(leaf.cert.serial_number, 'x')}" in r.out
    )
    assert f"sha256 {fingerprint(leaf.cert)}" in r.out
    assert "chain: 3 certificate(s) up to CN=Example Root CA,O=Example Corp" in r.out
    assert "pinned devices: 0 device(s)" in r.out
    assert "not at this service's root" in r.err  # warned: devices must trust that root
    assert load_slot_chain(config.certs_dir, "web") == [leaf.cert, intermediate.cert, root.cert]
    assert stat.S_IMODE((config.certs_dir / "web.key").stat().st_mode) == 0o600
    assert load_slot_certificate(config.certs_dir, "web") == leaf.cert
    backup = x509.load_pem_x509_certificates((config.certs_dir / "web.pem.old").read_bytes())[0]
    assert backup == old
    assert stat.S_IMODE((config.certs_dir / "web.key.old").stat().st_mode) == 0o600
    async with db.session() as session:
        event = await session.scalar(select(Event).where(Event.type == "server_cert_replaced"))
    assert event is not None
    assert event.body["slot"] == "web"
    assert event.body["new"]["sha256"] == fingerprint(leaf.cert)
    assert event.body["old"]["serial"] == format(old.serial_number, "x")
    async with db.session() as session:
        row = await session.scalar(
            select(IssuedCertificateRecord).where(
                IssuedCertificateRecord.serial == format(old.serial_number, "x")
            )
        )
    assert row is not None and row.status == "superseded"  # no expiry notices for a certificate out of use


async def test_chain_may_end_at_our_own_root(config, db) -> None:
    from mdm.pki.ca import CertificateAuthority

    ca = CertificateAuthority.load(config.ca_dir)
    issued = ca.issue_with_key(common_name="localhost", days=30, server=True, sans=["localhost"])
    assert issued.key is not None
    # only the leaf: the issuing CA and the root come from our own CA directory
    r = await set_slot(config, "ios", p12(Issuer(issued.certificate, issued.key), []))
    assert r.code == 0, r.err
    assert load_slot_chain(config.certs_dir, "ios") == [issued.certificate, ca.issuing, ca.root]
    assert "not at this service's root" not in r.err


@pytest.mark.parametrize("kind", ["3des", "rc2"])
async def test_legacy_containers(config, foreign, kind: str) -> None:
    root, intermediate = foreign
    leaf = make_leaf(intermediate, "localhost")
    data = (
        p12(leaf, [intermediate.cert, root.cert], legacy=True)
        if kind == "3des"
        else rc2_p12(leaf, [intermediate.cert, root.cert])
    )
    r = await set_slot(config, "C", data)
    assert r.code == 0, r.err
    assert load_slot_certificate(config.certs_dir, "C") == leaf.cert


def test_rc2_container_without_the_legacy_provider_falls_back_to_openssl(config, foreign, tmp_path) -> None:
    root, intermediate = foreign
    leaf = make_leaf(intermediate, "localhost")
    container = tmp_path / "legacy.p12"
    container.write_bytes(rc2_p12(leaf, [intermediate.cert, root.cert], "pw"))
    no_legacy = {"CRYPTOGRAPHY_OPENSSL_NO_LEGACY": "1"}
    # the in-process library really cannot read it in that mode...
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cryptography.hazmat.primitives.serialization import pkcs12; "
            f"pkcs12.load_pkcs12(open({str(container)!r}, 'rb').read(), b'pw')",
        ],
        capture_output=True,
        text=True,
        env={**_env(), **no_legacy},
    )
    assert probe.returncode != 0 and "Invalid password or PKCS12 data" in probe.stderr
    # ...and `mdm certs set` still loads it (openssl pkcs12 -legacy), and still tells a wrong password
    wrong = cli_subprocess(
        "certs",
        "set",
        "-t",
        "MR",
        "-i",
        str(container),
        "-p",
        "nope",
        "--data-dir",
        str(config.data_path),
        env=no_legacy,
    )
    assert wrong.code == 1 and "wrong password" in wrong.err and "Traceback" not in wrong.err
    r = cli_subprocess(
        "certs",
        "set",
        "-t",
        "MR",
        "-i",
        str(container),
        "-p",
        "pw",
        "--data-dir",
        str(config.data_path),
        env=no_legacy,
    )
    assert r.code == 0, r.err
    assert load_slot_chain(config.certs_dir, "MR") == [leaf.cert, intermediate.cert, root.cert]


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}


async def test_pinned_devices_are_counted(config, foreign, db) -> None:
    old_fp = fingerprint(load_slot_certificate(config.certs_dir, "M"))
    async with db.transaction() as session:
        for i, pin in enumerate([old_fp, old_fp, "00" * 32]):
            session.add(
                Device(
                    protocol=Protocol.KES.value,
                    identifier=f"android-{i}",
                    inventory={},
                    attributes={"server_pin": pin},
                )
            )
    root, intermediate = foreign
    r = await set_slot(config, "M", p12(make_leaf(intermediate, "localhost"), [intermediate.cert, root.cert]))
    assert r.code == 0, r.err
    assert "pinned devices: 2 device(s) pinned the old certificate; they must receive the new pin" in r.out
    async with db.session() as session:
        event = await session.scalar(select(Event).where(Event.type == "server_cert_replaced"))
    assert event is not None and event.body["pinned_devices"] == 2 and event.severity == "warning"


# ---- bad input: a precise message, exit 1, the slot untouched ---------------------------------------
def _cases(root: Issuer, intermediate: Issuer) -> dict[str, tuple[bytes, str | None, str]]:
    chain = [intermediate.cert, root.cert]
    good = p12(make_leaf(intermediate), chain)
    weak = make_leaf(intermediate, key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    expired = make_leaf(intermediate, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=2))
    client_only = make_leaf(intermediate, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    other_host = make_leaf(intermediate, "www.example.org", sans=["www.example.org"])
    return {
        "wrong password": (good, "wrong", "wrong password for the PKCS#12 container"),
        "no key": (p12(make_leaf(intermediate), chain, with_key=False), "secret", "holds no private key"),
        "no chain": (p12(make_leaf(intermediate), []), "secret", "the chain is incomplete: the issuer of"),
        "chain without root": (
            p12(make_leaf(intermediate), [intermediate.cert]),
            "secret",
            "the issuer of CN=Example Server CA,O=Example Corp",
        ),
        "1024-bit key": (p12(weak, chain), "secret", "RSA key of 1024 bits is too weak"),
        "expired": (p12(expired, chain), "secret", "the certificate CN=localhost,O=Example Corp expired on"),
        "wrong EKU": (p12(client_only, chain), "secret", "serverAuth is required"),
        "no EKU": (p12(make_leaf(intermediate, eku=[]), chain), "secret", "has no extended key usage"),
        "host name": (p12(other_host, chain), "secret", "does not cover the host name 'localhost'"),
        "garbage": (b"this is not a certificate container at all" * 3, "secret", "not a PKCS#12 container"),
        "truncated": (good[: len(good) // 2], "secret", "not a PKCS#12 container (the DER is truncated"),
        "PEM instead": (pem(root.cert), "secret", "this is a PEM file, not a PKCS#12"),
        "empty": (b"", "secret", "the file is empty"),
        "no password": (good, None, "the container is password-protected: give -p PASSWORD"),
    }


async def test_bad_containers_change_nothing(config, foreign) -> None:
    root, intermediate = foreign
    for slot in ("C", "M"):
        before = slot_bytes(config, slot)
        listing = sorted(p.name for p in config.certs_dir.iterdir())
        for label, (data, password, message) in _cases(root, intermediate).items():
            r = await set_slot(config, slot, data, password)
            assert r.code == 1, (label, r.out, r.err)
            assert "Traceback" not in r.err, label
            assert r.err.startswith("mdm: error: ") and message in r.err, (label, r.err)
            assert f"slot {slot} unchanged" in r.err, label
            assert r.out == "", label
            assert slot_bytes(config, slot) == before, label
            assert sorted(p.name for p in config.certs_dir.iterdir()) == listing, label


async def test_usage_errors(config, tmp_path) -> None:
    r = await cli("certs", "set", "-t", "X", "-i", "a.p12", "-p", "x", "--data-dir", str(config.data_path))
    assert r.code == 2 and "invalid choice: 'X'" in r.err
    r = await cli(
        "certs",
        "set",
        "-t",
        "C",
        "-i",
        str(tmp_path / "missing.p12"),
        "-p",
        "x",
        "--data-dir",
        str(config.data_path),
    )
    assert r.code == 1 and r.err.strip() == f"mdm: error: -i {tmp_path / 'missing.p12'}: no such file"
