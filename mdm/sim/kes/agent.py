"""A simulated KES agent: enrolls from its package, then syncs over mutual TLS.

    package = await kes_package.download(link, verify=ctx)   # or EnrollmentPackage.parse(qr)
    agent = KesAgent(package, AndroidFacts.generate(rng))
    await agent.enroll()       # register + certificate over one-way TLS, then mutual TLS
    await agent.sync()         # status, results, applied policy version -> commands, policy
    await agent.settle()       # sync until every result is reported

Wake-ups: ``woken`` is the FCM contract fake's ``on_message`` for this agent's token; ``run``
syncs when woken (``mode="fcm"``) or holds a long-poll sync open (``mode="long_poll"``).
"""

from __future__ import annotations

import asyncio
import hmac
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mdm.sim.identity import Identity
from mdm.sim.kes import protocol
from mdm.sim.kes.commands import Executor
from mdm.sim.kes.facts import AndroidFacts
from mdm.sim.kes.http import KesTransportError, PinnedConnection, tls_context
from mdm.sim.kes.package import EnrollmentPackage
from mdm.sim.kes.state import AgentState

WakeMode = Literal["fcm", "long_poll"]


class DeviceGone(Exception):
    """The agent was wiped or unenrolled: it no longer talks to the server."""


@dataclass
class SyncAnswer:
    commands: list[dict[str, Any]] = field(default_factory=list)
    policy_version: str | None = None  # when the answer carried a policy
    sync_interval: float | None = None
    renew_certificate: bool = False
    raw: dict[str, Any] = field(default_factory=dict)


class KesAgent:
    def __init__(self, package: EnrollmentPackage, facts: AndroidFacts | None = None, *,
                 rng: random.Random | None = None, timeout: float = 30.0,
                 download_verify: ssl.SSLContext | bool = True, host: str | None = None) -> None:
        self.package = package
        self.rng = rng or random.Random()  # noqa: S311 - simulation data
        self.state = AgentState(facts or AndroidFacts.generate(self.rng))
        self.timeout = timeout
        self.download_verify = download_verify
        self.host = host or package.host
        self.identity: Identity | None = None
        self.device_id: int | None = None
        self.sync_interval: float = 900.0
        self.syncs = 0
        self.wake = asyncio.Event()
        self.wakeups = 0
        self.executor = Executor(self.state, self._upload, self._download, self.rng)
        self._results: list[dict[str, Any]] = []  # executed, not yet reported
        self._send_inventory = True
        self._reported: tuple[dict[str, Any], dict[str, Any]] | None = None  # status, local settings
        self._one_way = self._connection(tls_context())
        self._mutual: PinnedConnection | None = None

    # ---- transport -----------------------------------------------------------------------------

    def _connection(self, context: ssl.SSLContext) -> PinnedConnection:
        return PinnedConnection(self.host, self.package.port, self.package.pins, context,
                                timeout=self.timeout)

    def _mutual_connection(self) -> PinnedConnection:
        if self._mutual is None:
            if self.identity is None:
                raise KesTransportError("no certificate yet: enroll first")
            context = tls_context()
            self.identity.load_into(context)
            self._mutual = self._connection(context)
        return self._mutual

    async def _post(self, conn: PinnedConnection, path: str, message: Mapping[str, Any]) -> dict[str, Any]:
        body = protocol.encode(dict(message))
        response = await conn.request("POST", path, body, headers={"Content-Type": protocol.JSON})
        if response.status >= 300:
            raise protocol.error_of(response.status, response.body, response.headers)
        answer: dict[str, Any] = response.json() if response.body else {}
        return answer

    async def info(self) -> dict[str, Any]:
        response = await self._one_way.request("GET", protocol.INFO)
        if response.status != 200:
            raise protocol.error_of(response.status, response.body, response.headers)
        info: dict[str, Any] = response.json()
        return info

    # ---- enrollment ----------------------------------------------------------------------------

    async def register(self) -> dict[str, Any]:
        answer = await self._post(self._one_way, protocol.REGISTER, protocol.register(self.state,
                                                                                     self.package.token))
        if str(answer.get("device_ref", "")).isdigit():
            self.device_id = int(answer["device_ref"])
        return answer

    def _csr(self) -> tuple[ec.EllipticCurvePrivateKey, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.state.facts.android_id)])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        return key, csr.public_bytes(serialization.Encoding.PEM).decode()

    async def request_certificate(self, *, renew: bool = False) -> Identity:
        """The first certificate (one-way TLS, with the token) or a renewal (mutual TLS with the
        current one, no token); the agent then talks mutual TLS with the new certificate."""
        key, csr = self._csr()
        conn = self._mutual_connection() if renew else self._one_way
        answer = await self._post(conn, protocol.CERTIFICATE,
                                  protocol.certificate(csr, None if renew else self.package.token,
                                                       self.state.facts.android_id))
        cert = x509.load_pem_x509_certificate(str(answer["certificate"]).encode())
        if cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo) != \
                key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo):
            raise KesTransportError("the issued certificate is not for the key of the request")
        chain = [x509.load_pem_x509_certificate(p.encode()) for p in answer.get("chain") or []]
        self.identity = Identity(key, cert, chain)
        if self._mutual is not None:
            await self._mutual.close()
            self._mutual = None
        return self.identity

    async def enroll(self) -> None:
        await self.register()
        await self.request_certificate()
        await self._one_way.close()

    # ---- sync ----------------------------------------------------------------------------------

    async def sync(self, wait: float = 0.0) -> SyncAnswer:
        """One sync: report, receive, apply the policy, execute the commands (their results go
        in the next sync). A 429 is waited out (Retry-After) and the same request sent again."""
        if self.state.gone and not self._results:
            raise DeviceGone(f"the device was {'wiped' if self.state.wiped else 'unenrolled'}")
        status, local = self.state.status(), dict(self.state.local_settings)
        last = self._reported
        report = protocol.Report(list(self._results), [], self._send_inventory,
                                 send_status=last is None or last[0] != status,
                                 send_local_settings=last is None or last[1] != local)
        message = protocol.sync(self.state, report, wait)
        conn = self._mutual_connection()
        while True:
            try:
                answer = await self._post(conn, protocol.SYNC, message)
                break
            except protocol.KesError as exc:
                if exc.status != 429:
                    raise
                await asyncio.sleep(min(exc.retry_after or 1.0, 5.0))
        self.syncs += 1
        self._reported = (status, local)
        self._results = self._results[len(report.results):]
        self._send_inventory = False
        out = SyncAnswer(raw=answer, commands=list(answer.get("commands") or []),
                         renew_certificate=bool(answer.get("renew_certificate")))
        if isinstance(answer.get("sync_interval"), int | float):
            self.sync_interval = out.sync_interval = float(answer["sync_interval"])
        policy = answer.get("policy")
        if isinstance(policy, dict):
            self.state.apply_policy(policy)
            out.policy_version = self.state.applied_policy_version
        for command in out.commands:
            if self.state.gone:
                break
            outcome = await self.executor.run(command)
            if outcome.report:
                self._results.append(protocol.result(outcome))
        if out.renew_certificate and not self.state.gone:
            await self.request_certificate(renew=True)
        if self.state.gone and not self._results:
            await self.close()
        return out

    @property
    def owes_report(self) -> bool:
        return bool(self._results)

    async def settle(self, max_syncs: int = 20) -> list[SyncAnswer]:
        """Sync until nothing is left to report and no command came (or the device is gone)."""
        answers = [await self.sync()]
        while len(answers) < max_syncs and (self.owes_report or answers[-1].commands
                                            or answers[-1].policy_version):
            if self.state.gone and not self.owes_report:
                break
            answers.append(await self.sync())
        return answers

    # ---- wake-ups --------------------------------------------------------------------------------

    def woken(self, token: str, data: dict[str, str]) -> None:
        """The FCM fake accepted a message for ``token``: wake the agent if it is this one's."""
        if hmac.compare_digest(token, self.state.facts.fcm_token):
            self.wakeups += 1
            self.wake.set()

    async def run(self, stop: asyncio.Event, mode: WakeMode = "fcm", long_poll: float = 30.0) -> None:
        """Sync until ``stop`` or the device is gone: on each FCM wake-up (or every sync interval),
        or in long-poll syncs held open by the server until work arrives."""
        while not stop.is_set() and not self.state.gone:
            if mode == "long_poll":
                waiter = asyncio.ensure_future(self.settle_once(long_poll))
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                    await self.close()
                stopper.cancel()
                if waiter.done() and not waiter.cancelled() and waiter.exception() is not None:
                    raise waiter.exception()  # type: ignore[misc]
                continue
            woke = asyncio.ensure_future(self.wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({woke, stopper}, timeout=self.sync_interval,
                               return_when=asyncio.FIRST_COMPLETED)
            woke.cancel()
            stopper.cancel()
            if stop.is_set():
                break
            self.wake.clear()
            await self.settle()

    async def settle_once(self, wait: float) -> None:
        answer = await self.sync(wait=wait)
        if self.owes_report or answer.commands:
            await self.settle()

    # ---- what commands need --------------------------------------------------------------------

    async def _upload(self, command_id: str, picture: bytes, content_type: str) -> Any:
        path = f"{protocol.MUGSHOT}?command_id={command_id}"
        response = await self._mutual_connection().request(
            "POST", path, picture, headers={"Content-Type": content_type})
        if response.status >= 300:
            raise protocol.error_of(response.status, response.body, response.headers)
        return response.json() if response.body else None

    async def _download(self, url: str) -> bytes:
        async with httpx.AsyncClient(verify=self.download_verify, timeout=self.timeout) as client:
            response = await client.get(url)
            response.raise_for_status()
            return response.content

    async def unenroll(self, reason: str = "user") -> None:
        await self._post(self._mutual_connection(), protocol.UNENROLL, protocol.unenroll(reason))
        self.state.unenrolled = True
        await self.close()

    async def close(self) -> None:
        await self._one_way.close()
        if self._mutual is not None:
            await self._mutual.close()

