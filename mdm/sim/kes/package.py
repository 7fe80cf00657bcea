"""The enrollment package (``docs/kes-protocol.md``, "Enrollment package"): the JSON the one-time
link serves, or the compact JSON of the QR code (which also carries the link)."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass

import httpx
from cryptography import x509

from mdm.sim.kes.http import KesTransportError, decode_pin

PACKAGE_TYPE = "kes-enrollment"
CONTENT_TYPE = "application/vnd.mdm.kes-enrollment+json"


class PackageError(Exception):
    """Not an enrollment package this agent can use."""


@dataclass(frozen=True)
class EnrollmentPackage:
    host: str
    port: int
    pins: tuple[bytes, ...]  # the M certificate's, then the reserve's
    token: str
    user: str = ""
    url: str = ""  # the one-time link (QR payload only)
    ca_certificates: tuple[x509.Certificate, ...] = ()
    pkcs12: dict[str, str] | None = None

    @classmethod
    def parse(cls, data: bytes | str) -> EnrollmentPackage:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise PackageError(f"the package is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("type") != PACKAGE_TYPE or doc.get("v") != 1:
            raise PackageError("not a version 1 kes-enrollment package")
        server = doc.get("server")
        token = doc.get("token")
        if not isinstance(server, dict) or not isinstance(server.get("host"), str) \
                or not isinstance(server.get("port"), int) or not isinstance(token, str) or not token:
            raise PackageError("the package lacks server.host, server.port or token")
        try:
            pins = tuple(decode_pin(doc[k]) for k in ("spki_sha256", "spki_sha256_reserve")
                         if isinstance(doc.get(k), str))
        except KesTransportError as exc:
            raise PackageError(str(exc)) from None
        if not pins:
            raise PackageError("the package has no spki_sha256 pin")
        cas = tuple(x509.load_pem_x509_certificate(p.encode()) for p in doc.get("ca_certificates") or [])
        pkcs12 = doc.get("pkcs12") if isinstance(doc.get("pkcs12"), dict) else None
        return cls(host=server["host"], port=server["port"], pins=pins, token=token,
                   user=str(doc.get("user", "")), url=str(doc.get("url", "")), ca_certificates=cas,
                   pkcs12=pkcs12)


async def download(url: str, verify: ssl.SSLContext | bool = True) -> EnrollmentPackage:
    """Fetch the package from its one-time link (the web listener, verified like a browser does)."""
    async with httpx.AsyncClient(verify=verify, timeout=30.0) as client:
        try:
            response = await client.get(url, headers={"Accept": CONTENT_TYPE})
        except httpx.HTTPError as exc:
            raise PackageError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise PackageError(f"GET {url} answered {response.status_code}")
    return EnrollmentPackage.parse(response.content)

