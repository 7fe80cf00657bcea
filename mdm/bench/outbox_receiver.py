"""The core server's stand-in for ``mdm bench outbox`` and the SIGKILL trials: the generic
endpoint's contract fake (``mdm.devfakes.core_receiver``) run as a process of its own, its TLS
files (a receiver CA and a 127.0.0.1 certificate), the HMAC key (0600), the ``[reporting]``
section that points a data directory at it, and a reader of its JSON-lines record.

Mutual TLS: the receiver requires a client certificate from the data directory's own CA (the
"core link" identity the server issues itself at start-up, as in production when no
``client_certificate_file`` is configured)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

from mdm.config import CONFIG_FILE
from mdm.devfakes.certs import make_ca, server_certificate

PATH = "/events"


class ReceiverError(Exception):
    pass


@dataclass(frozen=True)
class ReceiverFiles:
    directory: Path
    ca: Path  # the server verifies the receiver against it ([reporting] ca_file)
    cert: Path
    key: Path
    hmac_key: Path
    record: Path
    timings: Path  # one line per request: arrival (monotonic), seconds to answer, status

    def url(self, port: int) -> str:
        return f"https://127.0.0.1:{port}{PATH}"


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_files(directory: Path) -> ReceiverFiles:
    """A receiver CA, its 127.0.0.1/localhost certificate and an HMAC key (reused when present)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = ReceiverFiles(directory, directory / "receiver-ca.pem", directory / "receiver.pem",
                          directory / "receiver.key", directory / "hmac.key", directory / "received.jsonl",
                          directory / "requests.txt")
    if not (files.ca.exists() and files.cert.exists() and files.key.exists()):
        ca = make_ca("mdm bench core receiver CA")
        issued = server_certificate(ca, "127.0.0.1")
        files.ca.write_bytes(ca.cert_pem)
        files.cert.write_bytes(issued.cert_pem)
        _write_secret(files.key, issued.key_pem)
    if not files.hmac_key.exists():
        _write_secret(files.hmac_key, secrets.token_hex(32).encode())
    return files


def reporting_toml(files: ReceiverFiles, port: int, batch_size: int, **extra: Any) -> str:
    """The ``[reporting]`` section (TOML text) that points a server at the receiver."""
    doc = tomlkit.document()
    section = tomlkit.table()
    for key, value in {"transport": "generic", "url": files.url(port), "ca_file": str(files.ca),
                       "hmac_key_file": str(files.hmac_key), "batch_size": batch_size, **extra}.items():
        section[key] = value
    doc["reporting"] = section
    return tomlkit.dumps(doc)


def configure(data_dir: Path, files: ReceiverFiles, port: int, batch_size: int, **extra: Any) -> None:
    """Write the ``[reporting]`` section into ``data_dir``'s mdm.toml (replacing one there)."""
    path = data_dir / CONFIG_FILE
    doc = tomlkit.parse(path.read_text())
    doc["reporting"] = tomlkit.parse(reporting_toml(files, port, batch_size, **extra))["reporting"]
    path.write_text(tomlkit.dumps(doc))


def command(files: ReceiverFiles, port: int, client_ca: Path, control_port: int) -> list[str]:
    return [sys.executable, "-m", "mdm.bench.outbox_timed", "--host", "127.0.0.1", "--port", str(port),
            "--cert", str(files.cert), "--key", str(files.key), "--client-ca", str(client_ca),
            "--hmac-key-file", str(files.hmac_key), "--record", str(files.record),
            "--timings", str(files.timings), "--control-port", str(control_port)]


async def start(files: ReceiverFiles, port: int, client_ca: Path, control_port: int, *,
                log: Path | None = None, wait_s: float = 30.0) -> asyncio.subprocess.Process:
    """Start the receiver (fresh record files) and wait until it accepts connections."""
    files.record.unlink(missing_ok=True)
    files.timings.unlink(missing_ok=True)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log is not None else None
    try:
        proc = await asyncio.create_subprocess_exec(
            *command(files, port, client_ca, control_port),
            stdout=asyncio.subprocess.DEVNULL if out is None else out,
            stderr=asyncio.subprocess.DEVNULL if out is None else out)
    finally:
        if out is not None:
            os.close(out)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            see = f"; see {log}" if log else ""
            raise ReceiverError(f"the core receiver exited with {proc.returncode}{see}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc
        except OSError:
            await asyncio.sleep(0.1)
    proc.kill()
    await proc.wait()
    raise ReceiverError(f"the core receiver did not listen on port {port} within {wait_s:.0f}s")


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


class RecordTail:
    """Counts the events the receiver recorded so far, reading only what was appended since the
    last call (complete lines)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.lines = path, 0, 0

    def poll(self) -> int:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return self.lines
        end = data.rfind(b"\n") + 1
        self.offset += end
        self.lines += data.count(b"\n", 0, end)
        return self.lines


def records(path: Path) -> Iterator[dict[str, Any]]:
    """Every recorded event, in the order first received (the receiver records an event once;
    it counts the duplicates it drops)."""
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


async def stats(control_port: int) -> dict[str, Any]:
    """The receiver's counters (events, duplicates, requests, answers by status)."""
    import httpx

    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        answer = (await client.get(f"http://127.0.0.1:{control_port}/stats")).json()
    return dict(answer)


async def control(control_port: int, **action: Any) -> None:
    """A fault of the receiver (``action="delay", seconds=...``, ``"clear"``, ...)."""
    import httpx

    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        (await client.post(f"http://127.0.0.1:{control_port}/control", json=action)).raise_for_status()


def timings(path: Path) -> list[tuple[float, float, int]]:
    """(arrival, seconds to answer, status) of every request, in arrival order."""
    out = []
    with path.open() as handle:
        for line in handle:
            parts = line.split()
            if len(parts) == 3:
                out.append((float(parts[0]), float(parts[1]), int(parts[2])))
    return out

