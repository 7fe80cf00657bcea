"""The CA: key types, 0600 keys, encryption at rest with the configured passphrase (and the
errors when it is missing or wrong), 128-bit random serials, and `mdm certs import-ca` with an
enterprise chain: what is trusted afterwards, what stays trusted, and every bad input."""

from __future__ import annotations

import base64
import hashlib
import ssl
import stat
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from conftest import listener_url
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID
from pki_support import (
    NOW,
    Issuer,
    ca_usage,
    cli,
    cli_subprocess,
    client_context,
    exchange,
    key_pem,
    make_ca,
    make_leaf,
    p12,
    pem,
    server_verdict,
)

from mdm.config_sections import load as load_config
from mdm.core import tokens
from mdm.db.models import User
from mdm.pki import services as plugin
from mdm.pki.ca import CertificateAuthority
from mdm.pki.keys import KeyError_, load_key
from mdm.pki.trust import IdentityRejected
from mdm.plugins import PLUGINS
from mdm.server.runtime import Server, open_context


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_create_key_types_permissions_serials(tmp_path: Path, key_type: str) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", key_type=key_type, rsa_bits=2048)
    for name in ("root.key", "issuing.key"):
        assert mode(tmp_path / "ca" / name) == 0o600
    if key_type == "ec":
        assert (
            isinstance(ca.issuing_key, ec.EllipticCurvePrivateKey)
            and ca.issuing_key.curve.name == "secp256r1"
        )
    else:
        assert isinstance(ca.issuing_key, rsa.RSAPrivateKey) and ca.issuing_key.key_size == 2048
        assert ca.root.public_key().key_size >= 3072  # type: ignore[union-attr]
    serials = {
        ca.issue_with_key(key_type="ec", common_name=f"d{i}", days=1, client=True).certificate.serial_number
        for i in range(50)
    }
    assert len(serials) == 50
    assert all(s.bit_length() == 128 for s in serials)
    # the bits below the top one vary (random, not a counter)
    assert len({s & 0xFFFF for s in serials}) > 40


def test_keys_encrypted_at_rest_and_passphrase_errors(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    CertificateAuthority.create(ca_dir, rsa_bits=2048, passphrase=b"correct horse")
    for name in ("root.key", "issuing.key"):
        data = (ca_dir / name).read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") and mode(ca_dir / name) == 0o600
    with pytest.raises(KeyError_, match=r"key is encrypted; set pki\.passphrase_file or MDM_CA_PASSPHRASE"):
        CertificateAuthority.load(ca_dir)
    with pytest.raises(KeyError_, match=r"wrong passphrase\?"):
        CertificateAuthority.load(ca_dir, b"wrong")
    assert CertificateAuthority.load(ca_dir, b"correct horse").issuing.subject


def test_init_and_serve_with_a_passphrase(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"MDM_CA_PASSPHRASE": "s3cret", "MDM_HOSTNAME": "localhost"}
    r = cli_subprocess("init", "--data-dir", str(data), env=env)
    assert r.code == 0, r.err
    assert "keys encrypted" in r.out
    assert (data / "ca" / "issuing.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    r = cli_subprocess("serve", "--data-dir", str(data), env={"MDM_HOSTNAME": "localhost"})
    assert r.code == 1 and "Traceback" not in r.err
    assert "issuing.key: key is encrypted; set pki.passphrase_file or MDM_CA_PASSPHRASE" in r.err
    r = cli_subprocess("serve", "--data-dir", str(data), env={"MDM_CA_PASSPHRASE": "nope"})
    assert r.code == 1 and "(wrong passphrase?)" in r.err and "Traceback" not in r.err
    missing = tmp_path / "missing-pass"
    (data / "mdm.toml").write_text(
        (data / "mdm.toml").read_text().replace('passphrase_file = ""', f'passphrase_file = "{missing}"')
    )
    r = cli_subprocess("serve", "--data-dir", str(data))
    assert r.code == 2 and f"pki.passphrase_file: cannot read {missing}" in r.err


async def test_encrypt_keys_command(config, tmp_path: Path) -> None:
    r = await cli("certs", "encrypt-keys", "--data-dir", str(config.data_path))
    assert r.code == 2 and "no passphrase configured" in r.err
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    toml = config.data_path / "mdm.toml"
    toml.write_text(toml.read_text() + f'[pki]\npassphrase_file = "{secret}"\n')
    r = await cli("certs", "encrypt-keys", "--data-dir", str(config.data_path))
    assert r.code == 0, r.err
    assert "2 key(s) encrypted" in r.out
    with pytest.raises(KeyError_):
        load_key(config.ca_dir / "issuing.key")
    assert load_key(config.ca_dir / "issuing.key", b"s3cret")
    r = await cli("certs", "encrypt-keys", "--data-dir", str(config.data_path))
    assert r.code == 0 and "already encrypted" in r.out


# ---- import-ca ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def enterprise() -> dict[str, Issuer]:
    root = make_ca("Corp Root CA")
    policy = make_ca("Corp Policy CA", root)
    return {
        "root": root,
        "policy": policy,
        "mdm": make_ca(
            "Corp MDM Issuing CA", policy, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ),
        "sibling": make_ca("Corp Wi-Fi Issuing CA", policy),
    }


async def test_import_ca_from_pem_and_what_is_trusted_afterwards(config, enterprise, tmp_path: Path) -> None:
    old_ca = CertificateAuthority.load(config.ca_dir)
    old_issued = old_ca.issue_with_key(common_name="old-phone", days=30, client=True)
    old_revoked = old_ca.issue_with_key(common_name="lost-phone", days=30, client=True)
    ours = enterprise["mdm"]
    (tmp_path / "ca.pem").write_bytes(pem(ours.cert, enterprise["policy"].cert, enterprise["root"].cert))
    (tmp_path / "ca.key").write_bytes(key_pem(ours.key))
    r = await cli(
        "certs",
        "import-ca",
        "--cert",
        str(tmp_path / "ca.pem"),
        "--key",
        str(tmp_path / "ca.key"),
        "--data-dir",
        str(config.data_path),
    )
    assert r.code == 0, r.err
    assert "issuing CA is now CN=Corp MDM Issuing CA" in r.out
    assert "chain: CN=Corp Root CA,O=Example Corp <- CN=Corp Policy CA,O=Example Corp <- " in r.out
    assert "previous CA moved to" in r.out
    ca_dir = config.ca_dir
    assert x509.load_pem_x509_certificate((ca_dir / "issuing.pem").read_bytes()) == ours.cert
    # root.pem: the new root first, then the previous one (the listeners still chain to it)
    assert x509.load_pem_x509_certificates((ca_dir / "root.pem").read_bytes()) == [
        enterprise["root"].cert,
        old_ca.root,
    ]
    assert "server certificates are unchanged" in r.out
    assert x509.load_pem_x509_certificates((ca_dir / "chain.pem").read_bytes()) == [
        ours.cert,
        enterprise["policy"].cert,
        enterprise["root"].cert,
    ]
    assert not (ca_dir / "root.key").exists() and mode(ca_dir / "issuing.key") == 0o600
    retired = [p for p in (ca_dir / "retired").iterdir()]
    assert len(retired) == 1 and (retired[0] / "issuing.key").exists() and (retired[0] / "root.key").exists()
    assert CertificateAuthority.load(ca_dir).chain == [
        ours.cert,
        enterprise["policy"].cert,
        enterprise["root"].cert,
    ]

    ctx = await open_context(config)
    server = Server(ctx, PLUGINS)
    await server.start()
    # the server certificates were not reissued: they still chain to the previous root
    old_root = config.ca_dir / "retired" / retired[0].name / "root.pem"
    try:
        async with ctx.db.transaction() as session:
            session.add(User(name="alice"))
            _, token = await tokens.create(session, "t", ["pki"])
        admin_trust = ssl.create_default_context(cafile=str(old_root))
        async with httpx.AsyncClient(
            base_url=listener_url(server, "admin"),
            verify=admin_trust,
            headers={"Authorization": f"Bearer {token}"},
        ) as api:
            r = await api.post(
                "/api/v1/certificates", json={"user": "alice", "type": "mobile", "p12_password": "pw"}
            )
            assert r.status_code == 201, r.text
        container = pkcs12.load_pkcs12(base64.b64decode(r.json()["pkcs12"]), b"pw")
        new_cert = container.cert.certificate
        assert new_cert.issuer == ours.cert.subject
        new_cert.verify_directly_issued_by(ours.cert)
        assert [c.certificate for c in container.additional_certs] == [
            ours.cert,
            enterprise["policy"].cert,
            enterprise["root"].cert,
        ]
        new_identity = Issuer(new_cert, container.key)  # type: ignore[arg-type]
        sibling = make_leaf(enterprise["sibling"], "intruder", sans=[], eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
        old_identity = Issuer(old_issued.certificate, old_issued.key)  # type: ignore[arg-type]
        lost_identity = Issuer(old_revoked.certificate, old_revoked.key)  # type: ignore[arg-type]

        verifier = plugin.verifier(ctx)
        kes = ctx.tls["kes"].front
        for ident, chain in ((new_identity, []), (old_identity, [])):
            verifier.verify(ident.cert)
            assert server_verdict(kes, client_context(old_root, ident, chain)) is None
        with pytest.raises(IdentityRejected):
            verifier.verify(sibling.cert)
        # even presenting the sibling CA and the policy CA does not make it trusted
        verdict = server_verdict(
            kes, client_context(old_root, sibling, [enterprise["sibling"].cert, enterprise["policy"].cert])
        )
        assert verdict is not None

        # an old-CA certificate can still be revoked: its CRL is signed with the retired key
        async with ctx.db.transaction() as session:
            from mdm.pki.tables import IssuedCertificateRecord

            session.add(
                IssuedCertificateRecord(
                    serial=format(old_revoked.certificate.serial_number, "x"),
                    type="mobile",
                    subject="CN=lost-phone",
                    source="internal",
                    status="valid",
                    not_before=old_revoked.certificate.not_valid_before_utc,
                    not_after=old_revoked.certificate.not_valid_after_utc,
                    pem=old_revoked.certificate.public_bytes(serialization.Encoding.PEM).decode(),
                )
            )
        r = await cli(
            "certs",
            "revoke",
            format(old_revoked.certificate.serial_number, "x"),
            "--url",
            listener_url(server, "admin"),
            "--token",
            token,
            "--data-dir",
            str(config.data_path),
        )
        assert r.code == 0, r.err
        # refused as revoked per request (the handshake lets it through: [pki] kes_tls_crl_check is
        # off by default, so that the device is answered 403 certificate_revoked)
        with pytest.raises(IdentityRejected) as rejected:
            verifier.verify(lost_identity.cert)
        assert rejected.value.reason == "revoked"
        crls = [
            x509.load_pem_x509_crl(b"-----BEGIN X509 CRL-----" + part)
            for part in (ca_dir / "crl.pem").read_bytes().split(b"-----BEGIN X509 CRL-----")[1:]
        ]
        by_issuer = {c.issuer: c for c in crls}
        assert (
            by_issuer[old_ca.issuing.subject].get_revoked_certificate_by_serial_number(
                old_revoked.certificate.serial_number
            )
            is not None
        )
        assert by_issuer[old_ca.issuing.subject].is_signature_valid(old_ca.issuing.public_key())
        assert by_issuer[ours.cert.subject].is_signature_valid(ours.cert.public_key())
        # the web listener serves the new chain
        async with httpx.AsyncClient() as plain:
            chain = (await plain.get(listener_url(server, "web", tls=False) + "/ca/chain.pem")).content
        assert x509.load_pem_x509_certificates(chain)[0] == ours.cert
        _, response = await exchange(
            int(listener_url(server, "kes", tls=True).rsplit(":", 1)[1]),
            client_context(old_root, new_identity),
        )
        assert response.startswith(b"HTTP/1.1 ")
    finally:
        await server.stop()


async def test_import_ca_from_pkcs12_with_encrypted_storage(config, enterprise, tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("s3cret")
    toml = config.data_path / "mdm.toml"
    toml.write_text(toml.read_text() + f'[pki]\npassphrase_file = "{secret}"\n')
    ours = enterprise["mdm"]
    (tmp_path / "ca.p12").write_bytes(p12(ours, [enterprise["policy"].cert, enterprise["root"].cert], "pw"))
    r = await cli(
        "certs",
        "import-ca",
        "--p12",
        str(tmp_path / "ca.p12"),
        "--password",
        "pw",
        "--reissue-server-certs",
        "--data-dir",
        str(config.data_path),
    )
    assert r.code == 0, r.err
    assert "encrypted" in r.out
    assert "reissued the server certificates of slots C, CR, M, MR, ios, web" in r.out
    chain = x509.load_pem_x509_certificates((config.certs_dir / "M.pem").read_bytes())
    assert chain[1:] == [ours.cert, enterprise["policy"].cert, enterprise["root"].cert]
    chain[0].verify_directly_issued_by(ours.cert)
    assert mode(config.certs_dir / "M.key") == 0o600
    assert (config.ca_dir / "issuing.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert CertificateAuthority.load(config.ca_dir, b"s3cret").issuing == ours.cert
    assert load_config(config.data_path, env={}).pki.passphrase_file == str(secret)


async def test_import_ca_bad_input_changes_nothing(config, enterprise, tmp_path: Path) -> None:
    root, policy, ours = enterprise["root"], enterprise["policy"], enterprise["mdm"]
    chain = [policy.cert, root.cert]
    weak = make_ca("Weak CA", policy, key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    no_sign = make_ca("No Sign CA", policy, usage=ca_usage(cert_sign=False))
    no_crl = make_ca("No CRL CA", policy, usage=ca_usage(crl_sign=False))
    expired = make_ca("Old CA", policy, not_after=NOW - timedelta(days=1))
    leaf = make_leaf(policy, "not-a-ca")
    encrypted_key = ours.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    cases = {
        "leaf": (pem(leaf.cert, *chain), key_pem(leaf.key), None, "is not a CA certificate"),
        "no keyCertSign": (pem(no_sign.cert, *chain), key_pem(no_sign.key), None, "lacks keyCertSign"),
        "no cRLSign": (pem(no_crl.cert, *chain), key_pem(no_crl.key), None, "lacks cRLSign"),
        "expired": (
            pem(expired.cert, *chain),
            key_pem(expired.key),
            None,
            "CA certificate CN=Old CA,O=Example Corp expired",
        ),
        "weak": (pem(weak.cert, *chain), key_pem(weak.key), None, "RSA key of 1024 bits is too weak"),
        "key mismatch": (
            pem(ours.cert, *chain),
            key_pem(policy.key),
            None,
            "does not belong to the certificate",
        ),
        "no chain": (pem(ours.cert, policy.cert), key_pem(ours.key), None, "the chain is incomplete"),
        "encrypted key": (
            pem(ours.cert, *chain),
            encrypted_key,
            None,
            "the key is encrypted; give its --password",
        ),
        "wrong key password": (pem(ours.cert, *chain), encrypted_key, "nope", "wrong --password"),
        "garbage cert": (b"garbage", key_pem(ours.key), None, "--cert: not a PEM or DER certificate"),
        "garbage key": (
            pem(ours.cert, *chain),
            b"garbage",
            None,
            "--key: not a readable PEM/DER private key",
        ),
    }
    before = snapshot(config.ca_dir)
    for label, (cert_data, key_data, password, message) in cases.items():
        (tmp_path / "c.pem").write_bytes(cert_data)
        (tmp_path / "k.pem").write_bytes(key_data)
        args = [
            "certs",
            "import-ca",
            "--cert",
            str(tmp_path / "c.pem"),
            "--key",
            str(tmp_path / "k.pem"),
            "--data-dir",
            str(config.data_path),
        ]
        if password:
            args += ["--password", password]
        r = await cli(*args)
        assert r.code == 1, (label, r.out, r.err)
        assert "Traceback" not in r.err and message in r.err and "the CA is unchanged" in r.err, (
            label,
            r.err,
        )
        assert snapshot(config.ca_dir) == before, label
    (tmp_path / "ca.p12").write_bytes(p12(ours, chain, "pw"))
    for password, message in (("wrong", "wrong password"), (None, "password-protected")):
        args = ["certs", "import-ca", "--p12", str(tmp_path / "ca.p12"), "--data-dir", str(config.data_path)]
        r = await cli(*args, *(["--password", password] if password else []))
        assert r.code == 1 and message in r.err, r.err
    (tmp_path / "nokey.p12").write_bytes(p12(ours, chain, "pw", with_key=False))
    r = await cli(
        "certs",
        "import-ca",
        "--p12",
        str(tmp_path / "nokey.p12"),
        "--password",
        "pw",
        "--data-dir",
        str(config.data_path),
    )
    assert r.code == 1 and "holds no private key" in r.err
    r = await cli(
        "certs", "import-ca", "--cert", str(tmp_path / "c.pem"), "--data-dir", str(config.data_path)
    )
    assert r.code == 2 and "--cert needs --key" in r.err
    assert snapshot(config.ca_dir) == before
