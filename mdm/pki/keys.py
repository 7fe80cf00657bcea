"""Private keys: generation per policy, and storage on disk with mode 0600 (encrypted if a
passphrase is configured)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class KeyError_(Exception):
    """A key file is missing, unreadable, wrongly protected or of an unsupported type."""


def generate_key(key_type: Literal["rsa", "ec"] = "rsa", rsa_bits: int = 2048) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created with mode 0600 from the start (no window of 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_key(path: Path, key: PrivateKeyTypes, passphrase: bytes | None = None) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_private(path, pem)


def key_is_encrypted(path: Path) -> bool:
    """Whether the PEM key file is passphrase-protected (PKCS#8 ``ENCRYPTED PRIVATE KEY``)."""
    with path.open("rb") as fh:
        return b"ENCRYPTED" in fh.readline()


def load_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyError_(f"{path}: key file is missing (run `mdm init`)") from None
    except PermissionError:
        raise KeyError_(f"{path}: key file is not readable by this user") from None
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except TypeError:
        raise KeyError_(
            f"{path}: key is encrypted; set pki.passphrase_file or MDM_CA_PASSPHRASE"
        ) from None
    except ValueError:
        hint = " (wrong passphrase?)" if encrypted else ""
        raise KeyError_(f"{path}: not a readable PEM private key{hint}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyError_(f"{path}: unsupported key type {type(key).__name__}")
    return key
