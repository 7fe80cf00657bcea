"""A server for local benchmark runs: a data directory prepared with ``mdm init`` (free ports, the
chosen database, iOS listener in TLS or plain mode, access log off), and ``mdm serve`` in a
subprocess whose RSS can be read from /proc."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import tomlkit
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mdm.bench.ports import free_ports
from mdm.config import CONFIG_FILE, Config
from mdm.config_sections import load as load_config
from mdm.pki.ca import self_signed

TOKEN_FILE = "bench-admin-token"  # noqa: S105 - a file name, not a secret
SERVER_LOG = "bench-server.log"


_PORT_VARIABLES = (
    "MDM_IOS_PORT", "MDM_KES_PORT", "MDM_WEB_HTTP_PORT", "MDM_WEB_HTTPS_PORT", "MDM_ADMIN_PORT",
)
_LOG_TAIL_LINES = 40


class LocalServerError(Exception):
    pass


def exit_message(log_path: Path, returncode: int) -> str:
    """Why ``mdm serve`` died at start: its exit code and the last lines it logged (CI keeps only
    the benchmark's own output, not the data directory)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    except OSError:
        lines = []
    tail = "".join(f"\n  | {line}" for line in lines)
    return f"mdm serve exited with {returncode}; see {log_path}{tail}"


# A topic-only push certificate (no key: APNs not configured) that ``prepare`` configures.
PUSH_STAND_IN = "bench-push.pem"


def _push_certificate(path: Path) -> None:
    """A stand-in MDM push certificate: only its subject UID (the APNs topic) is used here."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.USER_ID, f"com.apple.mgmt.External.{uuid.uuid4()}"),
            x509.NameAttribute(NameOID.COMMON_NAME, "APSP: mdm bench"),
        ]
    )
    cert = self_signed(key, name, days=365)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    env["MDM_DATA_DIR"] = str(data_dir)
    return env


def prepare(data_dir: Path, *, database_url: str = "", plain: bool = False, pool_size: int = 10) -> Config:
    """``mdm init`` once, then (every run) the listener mode and database URL this run asks for."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = data_dir / CONFIG_FILE
    if not config_path.exists():
        env = _env(data_dir)
        env.update(
            {
                "MDM_HOSTNAME": "127.0.0.1",
                "MDM_ADMIN_TOKEN": secrets.token_urlsafe(32),
                **dict(zip(_PORT_VARIABLES, map(str, free_ports(len(_PORT_VARIABLES))), strict=True)),
            }
        )
        if database_url:
            env["MDM_DATABASE_URL"] = database_url
        proc = subprocess.run(
            [sys.executable, "-m", "mdm", "init", "--data-dir", str(data_dir)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise LocalServerError(f"mdm init failed: {proc.stderr.strip() or proc.stdout.strip()}")
        token_path = data_dir / TOKEN_FILE
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(env["MDM_ADMIN_TOKEN"])
        _push_certificate(data_dir / PUSH_STAND_IN)
    doc = tomlkit.parse(config_path.read_text())
    doc["listeners"]["ios"]["mode"] = "plain" if plain else "tls"
    doc["logging"]["access_log"] = False
    doc["logging"]["level"] = "WARNING"
    if database_url:
        doc["database"]["url"] = database_url
    doc["database"]["pool_size"] = pool_size
    if "apns" not in doc:
        doc["apns"] = tomlkit.table()
    apns = doc["apns"]
    if not apns.get("certificate_file"):
        apns["certificate_file"] = str(data_dir / PUSH_STAND_IN)
    config_path.write_text(tomlkit.dumps(doc))
    return load(data_dir)


def load(data_dir: Path) -> Config:
    """The data directory's configuration as its server will read it (again after a change)."""
    return load_config(data_dir, env=_env(data_dir), require_file=True)


def listener_ports(config: Config) -> set[int]:
    """The ports picked for the server's listeners: a bench picking more ports for its fakes
    before the server listens must avoid them (``ports.free_ports(avoid=...)``)."""
    ls = config.listeners
    return {ls.ios.port, ls.kes.port, ls.web.http_port, ls.web.https_port, ls.admin.port}


def admin_token(data_dir: Path) -> str:
    try:
        return (data_dir / TOKEN_FILE).read_text().strip()
    except OSError:
        raise LocalServerError(
            f"{data_dir} was not prepared by mdm bench (no {TOKEN_FILE}); pass --token for the admin API"
        ) from None


@dataclass
class LocalServer:
    config: Config
    process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def url(self, listener: str) -> str:
        ls = self.config.listeners
        if listener == "ios":
            scheme = "https" if ls.ios.mode == "tls" else "http"
            return f"{scheme}://127.0.0.1:{ls.ios.port}"
        if listener == "admin":
            return f"https://127.0.0.1:{ls.admin.port}"
        raise ValueError(listener)

    async def start(self, wait_s: float = 60.0) -> None:
        log_path = self.config.data_path / SERVER_LOG
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mdm",
                "serve",
                "--data-dir",
                str(self.config.data_path),
                env=_env(self.config.data_path),
                stdout=fd,
                stderr=subprocess.STDOUT,
            )
        finally:
            os.close(fd)
        ctx = ssl.create_default_context(cafile=str(self.config.ca_dir / "root.pem"))
        deadline = time.monotonic() + wait_s
        async with httpx.AsyncClient(verify=ctx, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise LocalServerError(exit_message(log_path, self.process.returncode))
                try:
                    if (await client.get(self.url("admin") + "/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise LocalServerError(f"mdm serve did not answer /healthz within {wait_s:.0f}s; see {log_path}")

    async def stop(self, grace_s: float = 20.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
