"""PKCS#12 containers in and out: legacy (RC2-40, 3DES) and modern (PBES2/AES-256).

Reading goes through ``cryptography`` (which parses RC2 through OpenSSL's legacy provider). Where
that provider is unavailable (an OpenSSL build without it, or ``CRYPTOGRAPHY_OPENSSL_NO_LEGACY``),
an RC2 container falls back to the ``openssl pkcs12 -legacy`` command. The container's structure
is inspected first with asn1crypto so that garbage, truncated DER and a wrong password get
different messages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from mdm.pki.ca import spki_der
from mdm.pki.keys import PrivateKey

MAX_CONTAINER_BYTES = 1024 * 1024
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.S)
LEGACY_ALGORITHMS = {"pkcs12_sha1_rc2_40", "pkcs12_sha1_rc2_128", "pkcs12_sha1_rc4_40", "pkcs12_sha1_rc4_128"}


NEEDS_PASSWORD = "the container is password-protected: give -p PASSWORD"  # noqa: S105
WRONG_PASSWORD = "wrong password for the PKCS#12 container (its integrity check failed)"  # noqa: S105


class ContainerError(Exception):
    """The container cannot be used; ``code`` is a short machine-readable word."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Container:
    key: PrivateKey | None
    cert: x509.Certificate | None
    additional: list[x509.Certificate] = field(default_factory=list)
    algorithms: list[str] = field(default_factory=list)  # encryption used inside, for messages


def inspect(data: bytes) -> list[str]:
    """The encryption algorithms inside the container, or ContainerError if it is not one."""
    if not data:
        raise ContainerError("not_pkcs12", "the file is empty")
    if len(data) > MAX_CONTAINER_BYTES:
        raise ContainerError("not_pkcs12", f"the file is {len(data)} bytes: too large for PKCS#12")
    if data.lstrip().startswith(b"-----BEGIN"):
        raise ContainerError("not_pkcs12", "this is a PEM file, not a PKCS#12 (.p12/.pfx) container")
    algorithms: list[str] = []
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        for info in pfx.authenticated_safe:
            kind = info["content_type"].native
            if kind == "encrypted_data":
                algorithms.append(
                    _algorithm(info["content"]["encrypted_content_info"]["content_encryption_algorithm"])
                )
            elif kind == "data":
                for bag in asn1_pkcs12.SafeContents.load(info["content"].native):
                    if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                        algorithms.append(_algorithm(bag["bag_value"]["encryption_algorithm"]))
    # asn1crypto raises ValueError, TypeError or KeyError on malformed input, depending on where
    # the structure breaks; all mean the same thing here.
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        hint = "truncated" if "Insufficient data" in str(exc) else "malformed"
        raise ContainerError(
            "not_pkcs12", f"not a PKCS#12 container (the DER is {hint}: {str(exc)[:120]})"
        ) from None
    return algorithms


def _algorithm(alg: object) -> str:
    name: str = alg["algorithm"].native  # type: ignore[index]
    if name == "pbes2":
        return f"pbes2/{alg['parameters']['encryption_scheme']['algorithm'].native}"  # type: ignore[index]
    return name


def load(data: bytes, password: str | None) -> Container:
    """Parse a container; ContainerError with code not_pkcs12, wrong_password or unsupported_key."""
    algorithms = inspect(data)
    secret = password.encode() if password else None
    try:
        parsed = pkcs12.load_pkcs12(data, secret)
    except ValueError:
        if LEGACY_ALGORITHMS & set(algorithms):
            return _load_with_openssl(data, password or "", algorithms)
        if secret is None:
            raise ContainerError("wrong_password", NEEDS_PASSWORD) from None
        raise ContainerError("wrong_password", WRONG_PASSWORD) from None
    except TypeError:
        raise ContainerError("wrong_password", NEEDS_PASSWORD) from None
    key = parsed.key
    if key is not None and not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise _unsupported_key(key)
    return Container(
        key=key,
        cert=parsed.cert.certificate if parsed.cert else None,
        additional=[c.certificate for c in parsed.additional_certs],
        algorithms=algorithms,
    )


def _load_with_openssl(data: bytes, password: str, algorithms: list[str]) -> Container:
    """RC2/RC4 containers when the in-process library refuses them: ``openssl pkcs12 -legacy``."""
    tool = shutil.which("openssl")
    if tool is None:
        raise ContainerError(
            "unsupported_algorithm",
            f"the container is encrypted with {', '.join(algorithms)}, which needs OpenSSL's legacy "
            "provider; "
            "install the openssl command or re-export the container with AES (openssl pkcs12 -export)",
        )
    env = {**os.environ, "MDM_P12_PASSWORD": password}
    result = subprocess.run(
        [tool, "pkcs12", "-legacy", "-nodes", "-passin", "env:MDM_P12_PASSWORD"],
        input=data,
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        err = result.stderr.decode(errors="replace").lower()
        if "mac verify" in err or "invalid password" in err or "bad decrypt" in err:
            raise ContainerError("wrong_password", WRONG_PASSWORD)
        raise ContainerError(
            "unsupported_algorithm",
            f"openssl could not read the legacy ({', '.join(algorithms)}) container: "
            f"{err.strip().splitlines()[0] if err.strip() else 'unknown error'}",
        )
    key: PrivateKey | None = None
    certs: list[x509.Certificate] = []
    for match in _PEM_BLOCK.finditer(result.stdout):
        if match.group(1).endswith(b"PRIVATE KEY"):
            loaded = serialization.load_pem_private_key(match.group(0), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise _unsupported_key(loaded)
            key = loaded
        elif match.group(1) == b"CERTIFICATE":
            certs.append(x509.load_pem_x509_certificate(match.group(0)))
    leaf = None
    if key is not None:
        spki = spki_der(key.public_key())
        leaf = next((c for c in certs if spki_der(c.public_key()) == spki), None)
    if leaf is None and certs:
        leaf = certs[0]
    others = [c for c in certs if c is not leaf]
    return Container(key=key, cert=leaf, additional=others, algorithms=algorithms)


def export(
    key: PrivateKey,
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    password: str,
    *,
    name: str | None = None,
    legacy: bool = False,
) -> bytes:
    """A PKCS#12 container: AES-256/PBKDF2 by default; ``legacy`` uses 3DES/SHA-1 for old clients
    (Android < 12 and some VPN clients cannot read AES containers)."""
    if not password:
        raise ValueError("a PKCS#12 container needs a password")
    encryption: serialization.KeySerializationEncryption
    if legacy:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - the legacy PKCS#12 MAC that old clients require
            .build(password.encode())
        )
    else:
        encryption = serialization.BestAvailableEncryption(password.encode())
    return pkcs12.serialize_key_and_certificates(
        name.encode() if name else None, key, cert, chain or None, encryption
    )


def _unsupported_key(key: object) -> ContainerError:
    return ContainerError("unsupported_key", f"{type(key).__name__} keys are not supported (RSA or EC P-256)")
