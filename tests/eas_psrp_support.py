"""Fixtures for end-to-end EAS tests: the WSMan/PSRP Exchange fake (mdm/devfakes/exchange_psrp.py)
behind a real MIT KDC (tests/kdc.py), and ``ExchangeRunner``s pointed at it.

Use from a test module::

    from tests.eas_psrp_support import EasWorld, eas_world_fixture  # noqa: F401  (fixtures)
    from tests.kdc import kdc_fixture, krb5_ccache_fixture  # noqa: F401

    async def test_x(eas_world: EasWorld) -> None:
        fake = eas_world.fake()                      # HTTPS, 2013 names, the session's KDC
        runner = eas_world.runner(fake)              # keytab auth, concurrency 2, fast retries
        records = await runner.run(cmdlets.get_cas_mailbox())

Everything is per test: the organisation, the fakes (port 0), the runners' data directories (their
private ccaches); ``eas_world`` closes them all at the end.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mdm.devfakes.certs import make_ca, server_certificate
from mdm.devfakes.exchange_org import Organisation
from mdm.devfakes.exchange_psrp import ExchangePsrpFake
from mdm.eas.cmdlets import REQUIRED_CMDLETS, Naming
from mdm.eas.config import EasConfig
from mdm.eas.runner import ExchangeRunner
from tests.kdc import Kdc

DOMAINS = ("corp.example.com", "branch.example.com")


class EasWorld:
    def __init__(self, kdc: Kdc, tmp_path: Path) -> None:
        self.kdc = kdc
        self.tmp_path = tmp_path
        self._fakes: list[ExchangePsrpFake] = []
        self._runners: list[ExchangeRunner] = []
        self._count = 0
        self.ca_file = tmp_path / "ca.pem"

    def org(self, *, mailboxes: int = 6, devices: int = 8,
            naming: Naming = Naming.EXCHANGE_2013, seed: int = 0) -> Organisation:
        """An organisation in which the service account may run every cmdlet it needs and
        ``nobody`` none."""
        org = Organisation.generate(mailboxes=mailboxes, devices=devices, seed=seed,
                                    domains=DOMAINS, naming=naming)
        org.permissions = {self.kdc.svc_principal: set(REQUIRED_CMDLETS),
                           self.kdc.nobody_principal: set()}
        return org

    def _certificate(self) -> tuple[Path, Path]:
        """One server certificate (and CA) for every HTTPS fake of the test: a cluster's servers
        are verified with the one [eas] ca_file."""
        cert, key = self.tmp_path / "cas.pem", self.tmp_path / "cas.key"
        if not cert.exists():
            ca = make_ca("EAS test CA")
            server = server_certificate(ca, self.kdc.host)
            self.ca_file.write_bytes(ca.cert_pem)
            cert.write_bytes(server.cert_pem)
            key.write_bytes(server.key_pem)
        return cert, key

    def fake(self, org: Organisation | None = None, *, tls: bool = True) -> ExchangePsrpFake:
        cert, key = self._certificate() if tls else (None, None)
        fake = ExchangePsrpFake(org or self.org(), keytab=self.kdc.service_keytab, tls=tls,
                                tls_cert=cert, tls_key=key, url_host=self.kdc.host)
        fake.start()
        self._fakes.append(fake)
        return fake

    def config(self, *fakes: ExchangePsrpFake, auth: str = "keytab", **overrides: Any) -> EasConfig:
        """An enabled [eas] section for ``fakes`` (cluster mode when several)."""
        self._count += 1
        first = fakes[0]
        values: dict[str, Any] = {
            "enabled": True,
            "mode": "cluster" if len(fakes) > 1 else "standard",
            "servers": [f"{self.kdc.host}:{f.port}" for f in fakes],
            "transport": "https" if first.url.startswith("https") else "http",
            "ca_file": str(self.ca_file) if first.url.startswith("https") else "",
            "principal": self.kdc.svc_principal,
            "concurrency": 2,
            "connect_timeout_seconds": 5.0,
            "cmdlet_timeout_seconds": 20.0,
            "retries": 2,
            "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 0.2,
            "failover_seconds": 30.0,
        }
        if auth == "keytab":
            values["keytab_file"] = str(self.kdc.svc_keytab)
        else:
            path = self.tmp_path / f"eas-{self._count}.password"
            path.write_text(auth if auth != "password" else self.kdc.svc_password, encoding="utf-8")
            os.chmod(path, 0o600)
            values["password_file"] = str(path)
        values.update(overrides)
        return EasConfig(**values)

    def runner(self, *fakes: ExchangePsrpFake, auth: str = "keytab",
               **overrides: Any) -> ExchangeRunner:
        """A runner for ``fakes``. ``auth``: "keytab", "password", or a (wrong) password."""
        config = self.config(*fakes, auth=auth, **overrides)
        runner = ExchangeRunner(config, self.tmp_path / f"data-{self._count}")
        self._runners.append(runner)
        return runner

    async def aclose(self) -> None:
        for runner in self._runners:
            await runner.close()
        for fake in self._fakes:
            fake.close()


@pytest.fixture(name="eas_world")
async def eas_world_fixture(kdc: Kdc, krb5_ccache: Path, tmp_path: Path) -> AsyncIterator[EasWorld]:
    world = EasWorld(kdc, tmp_path)
    try:
        yield world
    finally:
        kdc.start_kdc()
        await world.aclose()
