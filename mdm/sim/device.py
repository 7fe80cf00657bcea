"""A simulated iOS device: enrollment from a published profile, check-in, and the command loop."""

from __future__ import annotations

import asyncio
import plistlib
import random
import secrets
import ssl
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from mdm.sim import profile as profiles
from mdm.sim.behaviour import answer
from mdm.sim.facts import HardwareFacts
from mdm.sim.identity import Identity
from mdm.sim.state import DeviceState, InstalledProfile
from mdm.sim.transport import Mode, Transport, TransportError, client_context

MAX_COMMANDS_PER_SESSION = 1000


class DeviceGone(Exception):
    """The device was erased or unenrolled: it no longer talks to the server."""


@dataclass
class PollResult:
    statuses: list[tuple[str, str]] = field(default_factory=list)  # (RequestType, Status) per command

    @property
    def commands(self) -> int:
        return len(self.statuses)


@dataclass
class Enrollment:
    server_url: str
    check_in_url: str
    topic: str
    sign_message: bool = True
    check_out_when_removed: bool = True


def _rebase(url: str, base: str | None) -> str:
    """``url`` with scheme/host/port taken from ``base`` (for servers on ephemeral ports)."""
    if not base:
        return url
    b, u = urlsplit(base), urlsplit(url)
    return urlunsplit((b.scheme, b.netloc, u.path, u.query, u.fragment))


async def fetch_profile(url: str, trusted_roots: list[x509.Certificate], timeout_s: float = 30.0) -> bytes:
    """Download an enrollment profile the way Safari does (GET; one-time links may answer 410)."""
    verify: ssl.SSLContext | bool = client_context(trusted_roots) if url.startswith("https") else True
    async with httpx.AsyncClient(verify=verify, timeout=timeout_s) as client:
        try:
            response = await client.get(
                url,
                headers={
                    "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like "
                    "Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
                },
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise TransportError(f"GET {url} answered {response.status_code}", response.status_code)
    return response.content


async def scep_identity(
    payload: dict[str, Any], trusted_roots: list[x509.Certificate], default_cn: str
) -> Identity:
    """Enroll for the identity described by a com.apple.security.scep payload (H3's SCEP client)."""
    from mdm.scep import client as scep_client

    content = payload.get("PayloadContent")
    if not isinstance(content, dict) or not isinstance(content.get("URL"), str):
        raise profiles.ProfileError("SCEP payload lacks PayloadContent.URL", code=1002)
    subject_cn = default_cn
    for rdn in content.get("Subject", []) or []:
        for pair in rdn:
            if isinstance(pair, list) and len(pair) == 2 and pair[0] == "CN":
                subject_cn = str(pair[1])
    bits = content.get("Keysize", 2048)
    key = await asyncio.to_thread(rsa.generate_private_key, 65537, max(int(bits), 2048))
    url = content["URL"]
    ctx = client_context(trusted_roots) if url.startswith("https") else None
    try:
        cert = await scep_client.enroll(
            url, str(content.get("Challenge", "")), subject_cn, key, ssl_context=ctx
        )
    except scep_client.ScepError as exc:
        raise profiles.ProfileError(
            f"SCEP enrollment failed: {exc}", code=22013, domain="MCSCEPErrorDomain"
        ) from None
    return Identity(key=key, certificate=cert, chain=[])


class SimulatedDevice:
    def __init__(
        self,
        facts: HardwareFacts | None = None,
        *,
        mode: Mode = "signature",
        trusted_roots: list[x509.Certificate] | None = None,
        rng: random.Random | None = None,
        timeout: float = 30.0,
        supervised: bool = False,
        server_base: str | None = None,
    ) -> None:
        self.state = DeviceState(facts=facts or HardwareFacts.generate(rng), supervised=supervised)
        self.mode = mode
        self.trusted_roots = list(trusted_roots or [])
        self.timeout = timeout
        self.server_base = server_base
        self.identity: Identity | None = None
        self.enrollment: Enrollment | None = None
        self.profile: profiles.EnrollmentProfile | None = None
        self.transport: Transport | None = None
        self.push_token = secrets.token_bytes(32)
        self.push_magic = str(uuid.uuid4()).upper()

    @property
    def udid(self) -> str:
        return self.state.facts.udid

    # ---- enrollment ------------------------------------------------------------------------------
    async def enroll(self, url: str) -> profiles.EnrollmentProfile:
        """Download the profile, verify its signature, install it and obtain the identity."""
        data = await fetch_profile(url, self.trusted_roots, self.timeout)
        return await self.install_enrollment(data)

    async def install_enrollment(self, data: bytes) -> profiles.EnrollmentProfile:
        profile = profiles.parse_enrollment(data, self.trusted_roots or None)
        anchors = self.trusted_roots + profile.roots
        if profile.identity_kind == "pkcs12":
            identity = profiles.identity_from_pkcs12(profile.identity_payload)
        else:
            identity = await scep_identity(profile.identity_payload, anchors, self.udid)
        self.profile = profile
        self.state.access_rights = profile.mdm.access_rights
        self.state.mdm_identifier = profile.identifier
        self.state.enrollment = InstalledProfile(
            profile.plist, managed=False, signer=profile.signed.signer, certificates=list(profile.roots)
        )
        self.adopt(
            identity,
            Enrollment(
                server_url=_rebase(profile.mdm.server_url, self.server_base),
                check_in_url=_rebase(profile.mdm.check_in_url, self.server_base),
                topic=profile.mdm.topic,
                sign_message=profile.mdm.sign_message,
                check_out_when_removed=profile.mdm.check_out_when_removed,
            ),
            extra_roots=profile.roots,
        )
        return profile

    def adopt(
        self, identity: Identity, enrollment: Enrollment, extra_roots: list[x509.Certificate] | None = None
    ) -> None:
        """Use an identity obtained out of band (the benchmark issues them in bulk)."""
        self.identity = identity
        self.enrollment = enrollment
        self.state.identity = identity.certificate
        self.state.trusted_roots = self.trusted_roots + list(extra_roots or [])
        self.transport = Transport(
            identity,
            mode=self.mode,
            trusted_roots=self.state.trusted_roots,
            timeout=self.timeout,
            user_agent=f"MDM/1.0 ({self.state.facts.product_name}; iOS {self.state.facts.os_version})",
            sign_always=enrollment.sign_message,
        )

    # ---- check-in --------------------------------------------------------------------------------
    def _ready(self) -> tuple[Transport, Enrollment]:
        if self.state.wiped or self.state.unenrolled:
            raise DeviceGone(f"device {self.udid} was {'erased' if self.state.wiped else 'unenrolled'}")
        if self.transport is None or self.enrollment is None:
            raise RuntimeError("the device is not enrolled yet")
        return self.transport, self.enrollment

    async def _checkin(self, message: dict[str, Any]) -> dict[str, Any]:
        transport, enrollment = self._ready()
        body = {"Topic": enrollment.topic, "UDID": self.udid, **message}
        response = await transport.checkin(enrollment.check_in_url, body)
        if response.status_code != 200:
            raise TransportError(
                f"check-in {message['MessageType']} answered {response.status_code}: {response.text[:300]}",
                response.status_code,
            )
        if not response.content.strip():
            return {}
        try:
            loaded = plistlib.loads(response.content)
        except Exception:
            return {}
        return loaded if isinstance(loaded, dict) else {}

    async def authenticate(self) -> dict[str, Any]:
        return await self._checkin({"MessageType": "Authenticate", **self.state.facts.checkin_identity()})

    async def token_update(self) -> dict[str, Any]:
        return await self._checkin(
            {
                "MessageType": "TokenUpdate",
                "Token": self.push_token,
                "PushMagic": self.push_magic,
                "UnlockToken": self.state.unlock_token,
                "AwaitingConfiguration": False,
            }
        )

    async def check_in(self) -> None:
        await self.authenticate()
        await self.token_update()

    async def check_out(self) -> None:
        transport, enrollment = self.transport, self.enrollment
        if transport is None or enrollment is None:
            return
        response = await transport.checkin(
            enrollment.check_in_url, {"MessageType": "CheckOut", "Topic": enrollment.topic, "UDID": self.udid}
        )
        if response.status_code != 200:
            raise TransportError(f"CheckOut answered {response.status_code}", response.status_code)

    # ---- command channel -------------------------------------------------------------------------
    async def poll(self) -> PollResult:
        """One session: Idle, then answer each command until the server has nothing more."""
        transport, enrollment = self._ready()
        state = self.state
        busy = state.busy or state.busy_polls > 0
        result = PollResult()
        message: dict[str, Any] = {"Status": "Idle", "UDID": self.udid}
        try:
            for _ in range(MAX_COMMANDS_PER_SESSION):
                response = await transport.connect(enrollment.server_url, message)
                if response.status_code != 200:
                    raise TransportError(
                        f"command channel answered {response.status_code}: {response.text[:300]}",
                        response.status_code,
                    )
                if state.wiped or state.unenrolled or not response.content.strip():
                    break
                try:
                    command: Any = plistlib.loads(response.content)
                except Exception:
                    command = None
                message = answer(state, command, busy=busy)
                request = (
                    command.get("Command", {}).get("RequestType", "?") if isinstance(command, dict) else "?"
                )
                result.statuses.append((str(request), message["Status"]))
        finally:
            if state.busy_polls > 0:
                state.busy_polls -= 1
        if state.replacement_enrollment is not None and not (state.wiped or state.unenrolled):
            data, state.replacement_enrollment = state.replacement_enrollment, None
            await self.install_enrollment(data)
            await transport.aclose()  # the previous identity's connection
        if state.unenrolled and enrollment.check_out_when_removed:
            await self.check_out()
        return result

    async def run(self, polls: int, interval: float = 0.0) -> list[PollResult]:
        """``polls`` sessions (stopping early once erased or unenrolled)."""
        results = []
        for i in range(polls):
            if self.state.wiped or self.state.unenrolled:
                break
            results.append(await self.poll())
            if interval and i + 1 < polls:
                await asyncio.sleep(interval)
        return results

    async def aclose(self) -> None:
        if self.transport is not None:
            await self.transport.aclose()

    async def __aenter__(self) -> SimulatedDevice:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
