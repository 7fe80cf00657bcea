"""Helpers for the PKI tests: foreign CAs and server certificates built with cryptography, PKCS#12
containers (modern through cryptography, legacy RC2 through the openssl command), TLS
handshakes with raw ``ssl`` sockets, and running the ``mdm`` CLI in-process or as a subprocess.
Nothing here imitates the service."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import ssl
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mdm.cli.main import main
from mdm.pki.ca import random_serial
from mdm.pki.keys import PrivateKey

NOW = datetime.now(UTC)


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ca_usage(*, crl_sign: bool = True, cert_sign: bool = True) -> x509.KeyUsage:
    return x509.KeyUsage(True, False, False, False, False, cert_sign, crl_sign, False, False)


@dataclass
class Issuer:
    cert: x509.Certificate
    key: PrivateKey


def make_ca(
    cn: str,
    parent: Issuer | None = None,
    *,
    key: PrivateKey | None = None,
    ca: bool = True,
    usage: x509.KeyUsage | None = None,
    days: int = 3650,
    not_after: datetime | None = None,
) -> Issuer:
    """A CA certificate (self-signed without ``parent``)."""
    key = key or ec_key()
    signer = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(parent.cert.subject if parent else name(cn))
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage or ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return Issuer(builder.sign(signer, hashes.SHA256()), key)


def make_leaf(
    parent: Issuer,
    cn: str = "localhost",
    *,
    key: PrivateKey | None = None,
    sans: list[str] | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issuer:
    key = key or ec_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(parent.cert.subject)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if eku is None else eku
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    names = ["localhost", "127.0.0.1"] if sans is None else sans
    if names:
        import ipaddress

        general: list[x509.GeneralName] = []
        for n in names:
            try:
                general.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                general.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    return Issuer(builder.sign(parent.key, hashes.SHA256()), key)


def p12(
    leaf: Issuer | None,
    chain: list[x509.Certificate],
    password: str = "secret",
    *,
    with_key: bool = True,
    legacy: bool = False,
) -> bytes:
    encryption: serialization.KeySerializationEncryption
    if legacy:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(password.encode())
        )
    else:
        encryption = serialization.BestAvailableEncryption(password.encode())
    return pkcs12.serialize_key_and_certificates(
        b"server",
        leaf.key if (leaf and with_key) else None,
        leaf.cert if leaf else None,
        chain or None,
        encryption,
    )


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def rc2_p12(leaf: Issuer, chain: list[x509.Certificate], password: str = "secret") -> bytes:
    """A legacy container (certificates RC2-40, key 3DES) made by the openssl command."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "leaf.pem").write_bytes(pem(leaf.cert))
        (d / "key.pem").write_bytes(key_pem(leaf.key))
        (d / "chain.pem").write_bytes(pem(*chain))
        subprocess.run(
            [
                "openssl",
                "pkcs12",
                "-export",
                "-legacy",
                "-certpbe",
                "PBE-SHA1-RC2-40",
                "-keypbe",
                "PBE-SHA1-3DES",
                "-in",
                str(d / "leaf.pem"),
                "-inkey",
                str(d / "key.pem"),
                "-certfile",
                str(d / "chain.pem"),
                "-out",
                str(d / "out.p12"),
                "-passout",
                f"pass:{password}",
            ],
            check=True,
            capture_output=True,
        )
        return (d / "out.p12").read_bytes()


# ---- TLS ----------------------------------------------------------------------------------------
def client_context(
    ca_file: Path,
    identity: Issuer | None = None,
    chain: list[x509.Certificate] = (),  # type: ignore[assignment]
    tls12: bool = False,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "id.pem"
            path.write_bytes(pem(identity.cert, *chain) + key_pem(identity.key))
            ctx.load_cert_chain(str(path))
    return ctx


def _exchange(port: int, ctx: ssl.SSLContext, request: bytes | None) -> tuple[x509.Certificate, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
            data = b""
            if request is not None:
                tls.sendall(request)
                while chunk := tls.recv(65536):
                    data += chunk
            return peer, data


async def exchange(
    port: int, ctx: ssl.SSLContext, path: str | None = "/healthz"
) -> tuple[x509.Certificate, bytes]:
    """Handshake (and an HTTP/1.1 GET); returns the server's certificate and the raw response.
    Raises ssl.SSLError when the server refuses (in TLS 1.3 the alert arrives on the first read)."""
    request = (
        None
        if path is None
        else f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    )
    return await asyncio.to_thread(_exchange, port, ctx, request)


async def served_certificate(port: int, ca_file: Path) -> x509.Certificate:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    return (await exchange(port, ctx, None))[0]


# ---- CLI ----------------------------------------------------------------------------------------
@dataclass
class Result:
    code: int
    out: str
    err: str


def _run_main(argv: list[str]) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


async def cli(*argv: str) -> Result:
    """``mdm ARGS`` in-process (in a thread: the CLI runs its own event loop / blocking client)."""
    return await asyncio.to_thread(_run_main, list(argv))


def cli_subprocess(*argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    r = subprocess.run(
        [sys.executable, "-m", "mdm", *argv],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=timeout,
    )
    return Result(r.returncode, r.stdout, r.stderr)


def server_verdict(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str | None:
    """Run a handshake against a listener's own server context in memory and return why the
    server refused the client (OpenSSL's verify message), or None if it accepted. Over a socket
    asyncio closes without flushing the alert, so the client sees only EOF; this names the cause."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    cli_ = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    done = {"srv": False, "cli": False}
    for _ in range(20):
        for label, side in (("cli", cli_), ("srv", srv)):
            if done[label]:
                continue
            try:
                side.do_handshake()
                done[label] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as exc:
                if label == "srv":
                    return str(exc.verify_message)
                raise
            except ssl.SSLError as exc:
                if label == "srv":
                    return str(exc.reason)
                raise
        if c_out.pending:
            s_in.write(c_out.read())
        if s_out.pending:
            c_in.write(s_out.read())
        if all(done.values()) and not c_out.pending and not s_out.pending:
            return None
    raise AssertionError("handshake did not finish")
