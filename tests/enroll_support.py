"""Helpers shared by the enrollment tests (tests/test_enroll_*.py)."""

from __future__ import annotations

import plistlib
import subprocess
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import pkcs12

FIXTURES = Path(__file__).parent / "fixtures"
# A real (expired) MDM push certificate from nanomdm's test data, MIT licence (LICENSE beside it).
PUSH_PEM = FIXTURES / "apple" / "nanomdm" / "push.pem"
PUSH_TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
APNS_TOML = f'\n[apns]\ncertificate_file = "{PUSH_PEM}"\n'


def openssl_verify(signed: bytes, root_pem: Path, tmp: Path) -> bytes:
    """Verify CMS SignedData with the openssl CLI (an independent implementation) and return
    the signed content. ``-purpose any``: the signer is the iOS listener's TLS certificate
    (serverAuth EKU), which Apple accepts for profile signing but OpenSSL's default S/MIME purpose
    check would not."""
    src = tmp / "signed.der"
    out = tmp / "content.plist"
    src.write_bytes(signed)
    proc = subprocess.run(
        ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(src), "-CAfile", str(root_pem),
         "-purpose", "any", "-out", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Verification successful" in proc.stderr
    return out.read_bytes()


def openssl_rejects(signed: bytes, root_pem: Path, tmp: Path) -> str:
    src = tmp / "bad.der"
    src.write_bytes(signed)
    proc = subprocess.run(
        ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(src), "-CAfile", str(root_pem),
         "-purpose", "any", "-out", "/dev/null"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode != 0
    return proc.stderr


def payloads(profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["PayloadType"]: p for p in profile["PayloadContent"]}


def schema_problems(profile: dict[str, Any]) -> list[str]:
    """Apple's schema (vendored YAML) via the project's validator, for iOS."""
    from mdm.ios.schema import validate_profile

    return [str(p) for p in validate_profile(profile, os_name="iOS")]


def open_pkcs12(payload: dict[str, Any]) -> pkcs12.PKCS12KeyAndCertificates:
    return pkcs12.load_pkcs12(payload["PayloadContent"], payload["Password"].encode())


def parse(content: bytes) -> dict[str, Any]:
    data = plistlib.loads(content)
    assert isinstance(data, dict)
    return data
