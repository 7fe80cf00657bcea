"""Server-certificate slots (the reference product's names) and their files.

``DATA_DIR/certs/<slot>.pem`` holds the leaf followed by its chain; ``<slot>.key`` its key (0600).
``install_slot`` replaces both, keeping the previous pair as ``<slot>.pem.old``/``<slot>.key.old``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm.pki.ca import CertificateAuthority, pem_chain
from mdm.pki.keys import PrivateKey, generate_key, write_private, write_public


@dataclass(frozen=True)
class Slot:
    name: str
    listener: str
    description: str
    reserve_of: str | None = None


SLOTS: dict[str, Slot] = {
    s.name: s
    for s in (
        Slot("C", "admin", "admin API and console"),
        Slot("CR", "admin", "reserve for C (rollover)", reserve_of="C"),
        Slot("M", "kes", "KES mobile port"),
        Slot("MR", "kes", "reserve for M (rollover)", reserve_of="M"),
        Slot("ios", "ios", "iOS MDM listener and profile signing"),
        Slot("web", "web", "web server (HTTPS one-time links)"),
    )
}

LISTENER_SLOT = {"admin": "C", "kes": "M", "ios": "ios", "web": "web"}


def slot_paths(certs_dir: Path, slot: str) -> tuple[Path, Path]:
    return certs_dir / f"{slot}.pem", certs_dir / f"{slot}.key"


def slot_exists(certs_dir: Path, slot: str) -> bool:
    return all(p.exists() for p in slot_paths(certs_dir, slot))


def issue_server_certificate(
    ca: CertificateAuthority,
    certs_dir: Path,
    slot: str,
    hostnames: list[str],
    *,
    key_type: str = "rsa",
    rsa_bits: int = 2048,
    days: int = 825,
) -> x509.Certificate:
    """Issue a serverAuth certificate for ``slot`` and write it with the CA chain."""
    key = generate_key("ec" if key_type == "ec" else "rsa", rsa_bits)
    cert = ca.issue(
        key.public_key(),
        common_name=hostnames[0],
        days=days,
        server=True,
        sans=hostnames,
    )
    cert_path, key_path = slot_paths(certs_dir, slot)
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    write_public(cert_path, pem_chain([cert, *ca.chain]))
    return cert


def load_slot_certificate(certs_dir: Path, slot: str) -> x509.Certificate:
    cert_path, _ = slot_paths(certs_dir, slot)
    return x509.load_pem_x509_certificates(cert_path.read_bytes())[0]


def load_slot_chain(certs_dir: Path, slot: str) -> list[x509.Certificate]:
    cert_path, _ = slot_paths(certs_dir, slot)
    return x509.load_pem_x509_certificates(cert_path.read_bytes())


def install_slot(certs_dir: Path, slot: str, key: PrivateKey, chain: list[x509.Certificate]) -> None:
    """Replace the slot's key and certificate. Both new files are written and synced first, then
    renamed into place key-then-certificate; the previous pair is kept as ``.old``. A reader that
    lands between the two renames sees a mismatching pair, which the listener treats like a
    missing slot (the reserve slot serves meanwhile, see ``mdm.pki.listener_tls``)."""
    cert_path, key_path = slot_paths(certs_dir, slot)
    certs_dir.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_tmp = key_path.with_name(key_path.name + ".new")
    cert_tmp = cert_path.with_name(cert_path.name + ".new")
    try:
        _write(key_tmp, key_pem, 0o600)
        _write(cert_tmp, pem_chain(chain), 0o644)
        for path in (key_path, cert_path):
            if path.exists():
                backup = path.with_name(path.name + ".old")
                shutil.copy2(path, backup)
                os.chmod(backup, 0o600 if path == key_path else 0o644)
        os.replace(key_tmp, key_path)
        os.replace(cert_tmp, cert_path)
    finally:
        for tmp in (key_tmp, cert_tmp):
            tmp.unlink(missing_ok=True)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)
