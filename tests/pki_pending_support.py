"""A certificate source for tests of the pending / denied / unavailable outcomes: its own CA,
switchable per mode; a pending request answers ``poll`` once the test approves (or denies) it.
The wire-level AD CS fake is ``mdm.devfakes`` (H3's); this one speaks only the Python seam."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki_support import Issuer, make_ca

from mdm.config import Config
from mdm.pki import plugin as pki_plugin
from mdm.pki.issuance import CertificateRequest
from mdm.pki.source_errors import CertificateDenied, CertificatePending, SourceUnavailable
from mdm.pki.sources import DEFAULT_SOURCES
from mdm.plugins import PLUGINS
from mdm.server.runtime import Server, open_context

NAME = "testpki"


@dataclass
class _Held:
    request: CertificateRequest
    public_key: CertificatePublicKeyTypes
    verdict: str = "pending"  # pending | approved | denied
    message: str = ""


@dataclass
class SwitchableSource:
    """``mode``: issue | pend | deny | down. ``approve(id)`` / ``deny(id)`` decide a held request."""

    name: str = NAME
    needs_csr: bool = True
    mode: str = "issue"
    ca: Issuer = field(default_factory=lambda: make_ca("Enterprise Issuing CA"))
    held: dict[str, _Held] = field(default_factory=dict)
    signed: list[CertificateRequest] = field(default_factory=list)
    polls: int = 0
    poll_down: bool = False
    latency: float = 0.0  # seconds each sign takes (an enterprise CA across the network)
    entered: list[CertificateRequest] = field(default_factory=list)  # sign called, maybe not answered
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    def trust_anchors(self) -> list[x509.Certificate]:
        return [self.ca.cert]

    def _certify(self, request: CertificateRequest, public_key: CertificatePublicKeyTypes
                 ) -> tuple[x509.Certificate, list[x509.Certificate]]:
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, request.common_name)]))
            .issuer_name(self.ca.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=request.days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.ca.key, hashes.SHA256())
        )
        self.signed.append(request)
        return cert, [self.ca.cert]

    async def sign(self, request: CertificateRequest, public_key: CertificatePublicKeyTypes
                   ) -> tuple[x509.Certificate, list[x509.Certificate]]:
        assert request.csr is not None and request.csr.is_signature_valid  # needs_csr honoured
        self.entered.append(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.mode == "down":
            raise SourceUnavailable(self.name, "connection refused")
        if self.mode == "deny":
            raise CertificateDenied(self.name, "Denied by Policy Module: template not allowed", "77")
        if self.mode == "pend":
            request_id = str(next(self._ids))
            self.held[request_id] = _Held(request, public_key)
            raise CertificatePending(self.name, request_id, "Taken Under Submission")
        return self._certify(request, public_key)

    async def poll(self, request_id: str) -> tuple[x509.Certificate, list[x509.Certificate]]:
        self.polls += 1
        if self.poll_down:
            raise SourceUnavailable(self.name, "503 Service Unavailable")
        held = self.held[request_id]
        if held.verdict == "denied":
            raise CertificateDenied(self.name, held.message, request_id)
        if held.verdict == "pending":
            raise CertificatePending(self.name, request_id, "Taken Under Submission")
        return self._certify(held.request, held.public_key)

    def approve(self, request_id: str) -> None:
        self.held[request_id].verdict = "approved"

    def deny(self, request_id: str, message: str = "Denied by a CA manager") -> None:
        self.held[request_id].verdict = "denied"
        self.held[request_id].message = message


@pytest.fixture
def source() -> SwitchableSource:
    return SwitchableSource()


@pytest.fixture
async def pending_server(config: Config, source: SwitchableSource) -> AsyncIterator[Server]:
    """A server whose PKI plugin also knows ``testpki`` (the switchable source)."""
    pki = pki_plugin.make_plugin({**DEFAULT_SOURCES, NAME: lambda _config, _ca: source})
    srv = Server(await open_context(config), tuple(pki if p.name == "pki" else p for p in PLUGINS))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def papi(pending_server: Server, config: Config, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=listener_url(pending_server, "admin"), verify=client_ssl_context(config),
        headers={"Authorization": f"Bearer {admin_token}"}, timeout=30,
    ) as client:
        yield client
