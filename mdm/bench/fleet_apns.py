"""The APNs contract fake for ``mdm bench fleet``: a subprocess (its CPU and memory its own) whose
certificates live in the data directory (``bench/apns``: the same push topic on every run, so a
prepared fleet stays valid), the server's ``[apns]`` pointed at it, and its control endpoint read
for the accepted-push counter and the pushes to the devices the simulator drives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import tomlkit

from mdm.bench.apns_fake_process import FakeApnsError as FakeApnsError
from mdm.bench.apns_fake_process import started
from mdm.bench.ports import free_ports
from mdm.config import CONFIG_FILE

CERT_DIR = "bench/apns"
# The synthetic fleet is never "silent" to the daily sweep (it would push every device at start).
SILENT_AFTER_HOURS = 24 * 365 * 10


@dataclass
class FakeProcess:
    process: asyncio.subprocess.Process
    info: dict[str, Any]
    control: str
    http: aiohttp.ClientSession

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.control}/stats") as response:
            return dict(await response.json())

    async def watch(self, tokens: list[str]) -> None:
        for start in range(0, len(tokens), 10_000):
            async with self.http.post(f"{self.control}/control",
                                      json={"action": "watch", "tokens": tokens[start:start + 10_000]}) as r:
                if r.status != 200:
                    raise FakeApnsError(f"the APNs fake refused the watch list: {await r.text()}")

    async def woken(self, after: int) -> tuple[list[str], int]:
        async with self.http.get(f"{self.control}/woken", params={"after": str(after)}) as response:
            body = await response.json()
        return list(body["tokens"]), int(body["next"])


@contextlib.asynccontextmanager
async def running(data_dir: Path, avoid: Collection[int] = ()) -> AsyncIterator[FakeProcess]:
    """The fake in a subprocess with its control endpoint (on a port none of ``avoid``: the
    server's, which does not listen yet); stopped (and waited for) on exit."""
    (port,) = free_ports(1, avoid=avoid)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        async with started(data_dir / CERT_DIR, "--control-port", str(port)) as fake:
            yield FakeProcess(fake.process, fake.info, f"http://127.0.0.1:{port}", http)
    finally:
        await http.close()


def configure(data_dir: Path, info: dict[str, Any], *, push_worker: str = "inline") -> None:
    """Point the server's ``[apns]`` at the fake (its client certificate is the push certificate:
    its subject UID is the topic), keep the daily sweep off the synthetic fleet, and run the push
    dispatcher's worker in the server or in a process of its own (``push.worker``)."""
    path = data_dir / CONFIG_FILE
    doc = tomlkit.parse(path.read_text())
    if "apns" not in doc:
        doc["apns"] = tomlkit.table()
    apns = doc["apns"]
    apns["certificate_file"] = info["client_cert"]
    apns["key_file"] = info["client_key"]
    apns["base_url"] = info["url"]
    apns["ca_file"] = info["ca_file"]
    if "push" not in doc:
        doc["push"] = tomlkit.table()
    doc["push"]["silent_after_hours"] = SILENT_AFTER_HOURS
    doc["push"]["worker"] = push_worker
    path.write_text(tomlkit.dumps(doc))


def unconfigure(data_dir: Path, stand_in: Path) -> bool:
    """Undo ``configure``'s ``[apns]`` (its certificate is the bench's own, under ``bench/apns``):
    a run without the fake must not leave the server pushing to a fake that is gone, every
    wake-up failing and retried in its loop. The certificate goes back to ``stand_in``, the
    topic-only certificate without a key that ``local.prepare`` configures (no transport); an
    ``[apns]`` of the administrator's is left alone. True if the configuration changed."""
    path = data_dir / CONFIG_FILE
    doc = tomlkit.parse(path.read_text())
    apns: Any = doc.get("apns")
    certificate = str(apns.get("certificate_file", "")) if apns is not None else ""
    if apns is None or not certificate or Path(certificate).parent != data_dir / CERT_DIR:
        return False
    apns["certificate_file"] = str(stand_in)
    for key in ("key_file", "base_url", "ca_file"):
        apns[key] = ""
    if "push" in doc:
        doc["push"].pop("worker", None)
    path.write_text(tomlkit.dumps(doc))
    return True
