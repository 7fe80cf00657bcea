"""``mdm init`` and ``mdm serve`` as an administrator runs them: subprocesses, a temporary data
directory, free ports through the MDM_*_PORT variables, real signals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from cryptography import x509
from ports import free_ports

from mdm.core import tokens
from mdm.db.engine import Database

PORT_VARS = ("MDM_IOS_PORT", "MDM_KES_PORT", "MDM_WEB_HTTP_PORT", "MDM_WEB_HTTPS_PORT", "MDM_ADMIN_PORT")
TOKEN_RE = re.compile(r"mdm_[0-9a-f]{8}_[A-Za-z0-9_-]+")
PG_URL = os.environ.get("MDM_TEST_DATABASE_URL", "")
NOBODY = 65534


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    env.update(dict(zip(PORT_VARS, map(str, free_ports(len(PORT_VARS))), strict=True)))
    env.update(extra)
    return env


def mdm(*args: str, env: dict[str, str], prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "mdm", *args], capture_output=True, text=True, env=env, timeout=120
    )


def snapshot(directory: Path) -> dict[str, tuple[int, str, int]]:
    """path -> (mtime_ns, sha256, mode) of every file below directory."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(directory))] = (
                st.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
                stat.S_IMODE(st.st_mode),
            )
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def error_lines(r: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in r.stderr, r.stderr
    return [line for line in r.stderr.splitlines() if line.startswith("mdm: error:")]


# ---- init ---------------------------------------------------------------------------------------
@pytest.fixture
def init_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """On PostgreSQL runs init uses the (emptied) test database; on SQLite it makes its own file.
    mdm.example.test does not resolve: the tests pass --no-resolve-check (test_firsthour_init)."""
    if PG_URL:
        return base_env(
            MDM_HOSTNAME="mdm.example.test", MDM_DATABASE_URL=request.getfixturevalue("database_url")
        )
    return base_env(MDM_HOSTNAME="mdm.example.test")


def test_init_creates_everything_and_second_run_changes_nothing(
    tmp_path: Path, init_env: dict[str, str]
) -> None:
    data = tmp_path / "init"
    r = mdm("init", "--data-dir", str(data), "--no-resolve-check", env=init_env)
    assert r.returncode == 0, r.stderr
    # the admin token is printed once, and only its hash is stored
    printed = TOKEN_RE.findall(r.stdout)
    assert len(printed) == 1, r.stdout
    token = printed[0]
    assert "shown once" in r.stdout
    for path in data.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    digest = hashlib.sha256(token.encode()).digest()
    if not PG_URL:
        with closing(sqlite3.connect(data / "mdm.sqlite3")) as conn:
            assert (
                conn.execute("SELECT secret_hash FROM api_tokens WHERE name='admin'").fetchone()[0] == digest
            )
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            assert {"alembic_version", "devices", "commands", "command_journal", "events", "groups"} <= tables
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert mode(data / "mdm.sqlite3") == 0o600
        assert "database migrated" in r.stdout
    # commented config, with the environment's values
    config = (data / "mdm.toml").read_text()
    assert config.count("\n#") > 5
    assert 'hostname = "mdm.example.test"' in config
    assert f"port = {init_env['MDM_ADMIN_PORT']}" in config
    # CA and server certificates; keys 0600, CA directory 0700
    assert mode(data / "ca") == 0o700
    keys = sorted(p.name for p in data.rglob("*.key"))
    assert keys == sorted(
        ["root.key", "issuing.key", *(f"{s}.key" for s in ("C", "CR", "M", "MR", "ios", "web")),
         "development-push.key"]
    )
    for key in data.rglob("*.key"):
        assert mode(key) == 0o600, key
    for slot in ("C", "CR", "M", "ios", "web"):
        cert = x509.load_pem_x509_certificate((data / "certs" / f"{slot}.pem").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "mdm.example.test" in sans.get_values_for_type(x509.DNSName)
        assert "localhost" in sans.get_values_for_type(x509.DNSName)

    before = snapshot(data)
    r2 = mdm("init", "--data-dir", str(data), env=init_env)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.startswith(f"nothing to do: {data} is already initialised")
    assert "--force" in r2.stdout
    assert not TOKEN_RE.search(r2.stdout)
    assert snapshot(data) == before


def test_init_honours_mdm_admin_token(tmp_path: Path, init_env: dict[str, str]) -> None:
    r = mdm("init", "--data-dir", str(tmp_path / "short"), "--no-resolve-check",
            env={**init_env, "MDM_ADMIN_TOKEN": "short"})
    assert r.returncode == 2
    assert error_lines(r) == ["mdm: error: MDM_ADMIN_TOKEN: a token must be at least 24 characters long"]
    data = tmp_path / "init"
    chosen = "mdm_0123abcd_" + "s" * 40
    r = mdm("init", "--data-dir", str(data), "--no-resolve-check",
            env={**init_env, "MDM_ADMIN_TOKEN": chosen})
    assert r.returncode == 0, r.stderr
    assert chosen not in r.stdout and "shown once" not in r.stdout
    url = init_env.get("MDM_DATABASE_URL") or f"sqlite+aiosqlite:///{data / 'mdm.sqlite3'}"

    async def principal(token: str) -> tokens.Principal | None:
        db = Database(url)
        try:
            async with db.session() as session:
                return await tokens.authenticate(session, token)
        finally:
            await db.close()

    found = asyncio.run(principal(chosen))
    assert found is not None and found.name == "admin" and found.allows("commands:write")
    assert asyncio.run(principal(chosen[:-1] + "x")) is None


def test_init_force_regenerates_ca_certificates_and_token(tmp_path: Path, init_env: dict[str, str]) -> None:
    data = tmp_path / "init"
    first = mdm("init", "--data-dir", str(data), "--no-resolve-check", env=init_env)
    assert first.returncode == 0, first.stderr
    before = snapshot(data)
    r = mdm("init", "--data-dir", str(data), "--force", env=init_env)
    assert r.returncode == 0, r.stderr
    after = snapshot(data)
    assert after["mdm.toml"] == before["mdm.toml"]  # the config is kept
    for name in (
        "ca/root.pem",
        "ca/root.key",
        "ca/issuing.pem",
        "certs/C.pem",
        "certs/C.key",
        "certs/web.pem",
    ):
        assert after[name][1] != before[name][1], name
    assert after["ca/root.key"][2] == 0o600
    new_token = TOKEN_RE.findall(r.stdout)
    assert len(new_token) == 1 and new_token != TOKEN_RE.findall(first.stdout)
    root = x509.load_pem_x509_certificate((data / "ca" / "root.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((data / "certs" / "C.pem").read_bytes())
    issuing = x509.load_pem_x509_certificate((data / "ca" / "issuing.pem").read_bytes())
    assert leaf.issuer == issuing.subject and issuing.issuer == root.subject
    leaf.verify_directly_issued_by(issuing)


# ---- serve --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A data dir made by a real ``mdm init`` (SQLite), with a known admin token; copied per test."""
    root = Path(tempfile.mkdtemp(prefix="mdm-init-"))
    data = root / "data"
    token = "mdm_00c0ffee_" + "t" * 40
    r = mdm("init", "--data-dir", str(data), env=base_env(MDM_HOSTNAME="localhost", MDM_ADMIN_TOKEN=token))
    assert r.returncode == 0, r.stderr
    yield data, token
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def data_dir(initialised: tuple[Path, str]) -> Iterator[Path]:
    # Outside pytest's 0700 tmp tree so that an unprivileged user can be given access to it.
    root = Path(tempfile.mkdtemp(prefix="mdm-serve-"))
    os.chmod(root, 0o755)
    target = root / "data"
    shutil.copytree(initialised[0], target, symlinks=True)
    yield target
    shutil.rmtree(root, ignore_errors=True)


class Served:
    """A running ``mdm serve`` subprocess whose stderr is collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, env: dict[str, str]) -> None:
        self.proc, self.env = proc, env
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            async with self._changed:
                self.lines.append(raw.decode().rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, needle: str, count: int = 1, timeout: float = 30) -> list[str]:
        async def enough() -> list[str]:
            async with self._changed:
                while True:
                    found = [line for line in self.lines if needle in line]
                    if len(found) >= count:
                        return found
                    if self._reader.done():
                        raise AssertionError(f"server exited before {needle!r}:\n" + "\n".join(self.lines))
                    await self._changed.wait()

        return await asyncio.wait_for(enough(), timeout)

    async def finish(self, timeout: float = 30) -> int:
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return rc


@pytest.fixture
async def serve(data_dir: Path) -> AsyncIterator:
    started: list[Served] = []

    async def start(env: dict[str, str], *extra: str) -> Served:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mdm",
            "serve",
            "--data-dir",
            str(data_dir),
            *extra,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        served = Served(proc, env)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()


async def _admin_token(url: str) -> str:
    db = Database(url)
    try:
        async with db.transaction() as session:
            _, token = await tokens.create(session, "serve-test", ["admin"])
        return token
    finally:
        await db.close()


async def _refuses_connections(port: int, within: float = 3.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return True
        w.close()
        await asyncio.sleep(0.05)
    return False


async def test_serve_logs_each_listener_and_drains_in_flight_request_on_sigterm(
    serve, data_dir: Path, initialised: tuple[Path, str], database_url: str
) -> None:
    if PG_URL:
        env = base_env(MDM_DATABASE_URL=database_url)
        token = await _admin_token(database_url)
    else:
        env, token = base_env(), initialised[1]
    served = await serve(env)
    listening = await served.wait_for("listening:", count=5)
    assert sorted(line.split("listening: ")[1].split(" on ")[0] for line in listening) == [
        "admin",
        "ios",
        "kes",
        "web",
        "web",
    ]
    admin = int(env["MDM_ADMIN_PORT"])
    assert any(f"admin on https://0.0.0.0:{admin}" in line for line in listening)
    assert any(f"web on http://0.0.0.0:{env['MDM_WEB_HTTP_PORT']}" in line for line in listening)
    pid_file = data_dir / "mdm.pid"
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    assert int(pid_file.read_text()) == served.proc.pid

    # A client uploading its body slowly: the request is in flight when SIGTERM arrives.
    tls = ssl.create_default_context(cafile=str(data_dir / "ca" / "root.pem"))
    reader, writer = await asyncio.open_connection("127.0.0.1", admin, ssl=tls, server_hostname="localhost")
    body = json.dumps({"name": "slow-uploader", "display_name": "x" * 200}).encode()
    writer.write(
        (
            f"POST /api/v1/users HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + body[:10]
    )
    await writer.drain()
    await asyncio.sleep(0.5)
    served.proc.send_signal(signal.SIGTERM)
    await served.wait_for("shutting down")
    assert await _refuses_connections(admin), "still accepting connections while shutting down"
    await asyncio.sleep(0.3)
    writer.write(body[10:])
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 201 Created", response[:300]
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["name"] == "slow-uploader"
    assert await served.finish() == 0
    assert not pid_file.exists()
    assert any("stopped" in line for line in served.lines[-3:]), served.lines
    assert not any("Traceback" in line for line in served.lines)


async def test_port_in_use_names_port_key_and_fix(serve) -> None:
    env = base_env()
    port = int(env["MDM_ADMIN_PORT"])
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("0.0.0.0", port))
    holder.listen()
    try:
        served = await serve(env)
        rc = await served.finish()
    finally:
        holder.close()
    assert rc == 1
    errors = [line for line in served.lines if line.startswith("mdm: error:")]
    assert errors == [
        f"mdm: error: port {port} (admin listener) is already in use "
        "(listeners.admin.port / MDM_ADMIN_PORT): stop the other process or choose another port"
    ]
    assert served.lines[-1] == errors[0]
    assert not any("Traceback" in line for line in served.lines)


def _unprivileged() -> tuple[str, ...]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to switch to an unprivileged user with setpriv")
    return ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


def _give_to_nobody(data_dir: Path) -> None:
    for path in [data_dir, *data_dir.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)


def test_privileged_port_without_privilege(data_dir: Path) -> None:
    prefix = _unprivileged()
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start <= 443:
        pytest.skip(f"ports from {start} are unprivileged on this host")
    _give_to_nobody(data_dir)
    r = mdm("serve", "--data-dir", str(data_dir), env=base_env(MDM_IOS_PORT="443"), prefix=prefix)
    assert r.returncode == 1, r.stderr
    assert error_lines(r) == [
        "mdm: error: port 443 (ios listener) needs privileges to bind (listeners.ios.port / MDM_IOS_PORT): "
        "run as root, grant CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on the python binary), "
        "or choose a port >= 1024"
    ]


def test_unreadable_tls_key(data_dir: Path) -> None:
    prefix = _unprivileged()
    _give_to_nobody(data_dir)
    key = data_dir / "certs" / "C.key"
    os.chown(key, 0, 0)
    r = mdm("serve", "--data-dir", str(data_dir), env=base_env(), prefix=prefix)
    assert r.returncode == 1, r.stderr
    assert error_lines(r) == [f"mdm: error: slot C: {key} is not readable by this user"]


def test_missing_tls_file(data_dir: Path) -> None:
    (data_dir / "certs" / "C.pem").unlink()
    r = mdm("serve", "--data-dir", str(data_dir), env=base_env())
    assert r.returncode == 1
    assert error_lines(r) == [
        f"mdm: error: slot C: {data_dir / 'certs' / 'C.pem'} is missing "
        "(run `mdm init`, or `mdm certs set -t C`)"
    ]


def test_database_unreachable(data_dir: Path) -> None:
    (closed,) = free_ports(1)
    url = f"postgresql+asyncpg://mdm:s3cret-pw@127.0.0.1:{closed}/mdm"
    r = mdm("serve", "--data-dir", str(data_dir), env=base_env(MDM_DATABASE_URL=url))
    assert r.returncode == 1
    (line,) = error_lines(r)
    assert line.startswith(
        f"mdm: error: cannot reach the database postgresql+asyncpg://mdm:***@127.0.0.1:{closed}/mdm: "
    )
    assert line.endswith("(check database.url / MDM_DATABASE_URL and that the server is running)")
    assert "s3cret-pw" not in r.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("[listeners.admin]", "[listeners.admin", "not valid TOML"),
        ("[listeners.kes]", "[listeners.kes]\nprot = 5", "listeners.kes.prot: unknown key"),
        (
            "max_body_bytes = 1048576",
            'max_body_bytes = "big"',
            "limits.max_body_bytes: Input should be a valid integer",
        ),
        (
            'level = "INFO"',
            'level = "LOUD"',
            "logging.level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
        ),
        ("json = false", 'json = "sometimes"', "logging.json: Input should be a valid boolean"),
    ],
)
def test_broken_config_names_the_key(data_dir: Path, old: str, new: str, expected: str) -> None:
    config = data_dir / "mdm.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    r = mdm("serve", "--data-dir", str(data_dir), env=base_env())
    assert r.returncode == 2
    (line,) = error_lines(r)
    assert expected in line and str(config) in line


def test_serve_without_init(tmp_path: Path) -> None:
    r = mdm("serve", "--data-dir", str(tmp_path / "nothing"), env=base_env())
    assert r.returncode == 2
    assert error_lines(r) == [
        f"mdm: error: {tmp_path / 'nothing' / 'mdm.toml'} does not exist; "
        f"run `mdm init --data-dir {tmp_path / 'nothing'}` first"
    ]
