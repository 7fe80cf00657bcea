"""``mdm reload`` / SIGHUP re-reads ``mdm.toml``: a valid file is applied key by key (what the
features declared hot, now; the rest named as needing a restart, the running value kept), a
broken one is refused as a whole with its key and line, and the outcome reaches the
administrator through ``run/reload.json``. CLI commands that read the data directory warn while
the running server's configuration differs from the file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import ssl
import sys
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from enroll_support import APNS_TOML, PUSH_PEM
from test_cli_init_serve import PG_URL, Served, base_env, error_lines, mdm

from mdm.config import Config
from mdm.config_reload import fingerprint, flatten, is_hot
from mdm.config_sections import load as load_config
from mdm.enroll.config import EnrollConfig
from mdm.ios import plugin as ios_plugin
from mdm.ios.config import IosConfig
from mdm.plugins import PLUGINS
from mdm.server.runfiles import read_reload_status, read_state
from mdm.server.runtime import RUNTIME_HOT, Server


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}


@pytest.fixture
def reloading(server: Server, config: Config) -> Server:
    """The conftest server, reloading from its data directory as `mdm serve` does."""
    server.reloader.load = lambda: load_config(config.data_path, env=_clean_env())
    return server


@pytest.fixture
def root_level():  # reloads change the root logger's level; put it back
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def _edit(config: Config, old: str, new: str) -> Path:
    path = config.data_path / "mdm.toml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, fragment: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


# ---- the mechanism --------------------------------------------------------------------------------
def test_every_hot_key_names_a_configuration_key() -> None:
    """A misspelt registration would silently report a key as needing a restart."""
    keys = set(flatten(load_config(Path("/nonexistent-mdm"), env={})))
    declared = [*RUNTIME_HOT, *(h for plugin in PLUGINS for h in plugin.hot)]
    assert len(declared) > len(RUNTIME_HOT)
    for entry in declared:
        for pattern in entry.keys:
            assert any(k == pattern or k.startswith(pattern + ".") for k in keys), pattern
    # what is built into listeners, the database and the TLS contexts at start is never hot
    for key in ("hostname", "database.url", "listeners.ios.port", "listeners.admin.bind",
                "limits.max_body_bytes", "logging.access_log", "pki.passphrase", "pki.crl_url",
                "ios.signature_max_age", "ios.identity_cache_size", "scep.enabled"):
        assert key in keys and not is_hot(key, declared), key


def test_fingerprints_hold_no_secret(tmp_path: Path) -> None:
    """run/state.json is copied by backups: no fast hash of a passphrase or a password in it."""
    (tmp_path / "mdm.toml").write_text(
        '[database]\nurl = "postgresql+asyncpg://mdm:s3cret@db.example.com/mdm"\n'
        '[pki]\npassphrase = "correct horse"\n[scep]\nstatic_challenge = "shared"\n'
    )
    config = load_config(tmp_path, env={})
    digests = fingerprint(config)
    assert "pki.passphrase" not in digests and "scep.static_challenge" not in digests
    assert "client.token_file" in digests and "scep.static_challenge_file" in digests
    masked = load_config(tmp_path, env={"MDM_DATABASE_URL": "postgresql+asyncpg://mdm:other@db.example.com/mdm"})
    assert fingerprint(masked)["database.url"] == digests["database.url"]  # the password is not in it


async def test_reload_applies_hot_keys_and_names_the_rest(
    reloading: Server, config: Config, api: httpx.AsyncClient, root_level: None
) -> None:
    ctx = reloading.ctx
    svc = ios_plugin.service(ctx)
    _edit(config, "access_log = false", 'access_log = false\nlevel = "DEBUG"')
    _edit(config, '[listeners.admin]\nbind = "127.0.0.1"', '[listeners.admin]\nbind = "127.0.0.2"')
    _edit(config, "[apns]", "[enroll]\nlink_ttl_seconds = 3600\n"
                 "[ios]\nnotnow_backoff_seconds = 5\nsignature_max_age = 60\n[apns]")

    status = await reloading.reloader.reload()

    assert status["ok"] and status["config"] == "applied" and status["error"] is None
    assert status["applied"] == ["enroll.link_ttl_seconds", "ios.notnow_backoff_seconds", "logging.level"]
    assert status["restart_needed"] == ["ios.signature_max_age", "listeners.admin.bind"]
    assert read_reload_status(config.data_path) == status
    # applied: in ctx.config, in the service built at start-up, in the logger
    assert ctx.config.logging.level == "DEBUG" and logging.getLogger().level == logging.DEBUG
    assert svc.config.notnow_backoff_seconds == 5
    # not applied: the running values stay, everywhere
    assert ctx.config.listeners.admin.bind == "127.0.0.1"
    assert ctx.config.section(IosConfig).signature_max_age == svc.config.signature_max_age == 600
    # the next request uses the new value
    response = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "alice"})
    assert response.status_code == 201, response.text
    expires = datetime.fromisoformat(response.json()["expires_at"])
    ttl = (expires - datetime.now(expires.tzinfo)).total_seconds()
    assert 3500 < ttl <= 3600
    # the run state describes what runs, and what waits for a restart
    state = read_state(config.data_path)
    assert state is not None and state["config"] == fingerprint(ctx.config)
    assert state["restart_pending"] == ["ios.signature_max_age", "listeners.admin.bind"]

    # a second reload of the same file: nothing new to apply, the same keys still wait
    again = await reloading.reloader.reload()
    assert again["applied"] == [] and again["config"] == "restart needed"
    assert again["seq"] == status["seq"] + 1
    assert again["restart_needed"] == ["ios.signature_max_age", "listeners.admin.bind"]


async def test_switching_the_push_certificate_takes_effect_and_is_reported(
    reloading: Server, config: Config, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Apple's certificate -> the development identity: the next enrollment uses its topic and
    says what it means; the log says it at once."""
    from mdm.push.topic import DEVELOPMENT_WARNING, create_development_identity

    value, topic = create_development_identity(config.data_path)
    _edit(config, f'certificate_file = "{PUSH_PEM}"', f'certificate_file = "{value}"')
    with caplog.at_level(logging.WARNING, logger="mdm.enroll"):
        status = await reloading.reloader.reload()
    assert status["applied"] == ["apns.certificate_file"] and status["restart_needed"] == []
    assert any(DEVELOPMENT_WARNING in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    response = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "bob"})
    assert response.status_code == 201, response.text
    assert DEVELOPMENT_WARNING in response.json()["warnings"]
    async with reloading.ctx.db.session() as session:
        from sqlalchemy import select

        from mdm.enroll.tables import Enrollment

        assert await session.scalar(select(Enrollment.topic)) == topic


@pytest.mark.parametrize(
    ("old", "new", "where", "expected"),
    [
        ("access_log = false", "acces_log = false", "acces_log",
         "logging.acces_log: unknown key (check the spelling"),
        ("[apns]", "[ios]\nnotnow_backoff_seconds = 0\n[apns]", "notnow_backoff_seconds",
         "ios.notnow_backoff_seconds: Input should be greater than or equal to 1 (got 0)"),
        ("[logging]", "[logging]\nlevel = \"LOUD\"", "LOUD", "logging.level: Input should be 'DEBUG'"),
        ("[limits]", "[limits", None, "not valid TOML"),
    ],
)
async def test_a_broken_file_is_refused_and_the_running_configuration_kept(
    reloading: Server, config: Config, caplog: pytest.LogCaptureFixture, root_level: None,
    old: str, new: str, where: str | None, expected: str,
) -> None:
    running = reloading.ctx.config
    path = _edit(config, old, new)
    path.write_text(path.read_text() + '\n[enroll]\nlink_ttl_seconds = 3600\n')  # a valid change alongside

    with caplog.at_level(logging.ERROR, logger="mdm.server"):
        status = await reloading.reloader.reload()

    assert not status["ok"] and status["config"] == "refused" and status["applied"] == []
    assert expected in status["error"] and str(path) in status["error"]
    if where is not None:
        assert status["error"].endswith(f"[line {_line_of(path, where)}]"), status["error"]
    assert reloading.ctx.config is running  # nothing applied, not even the valid change
    assert running.section(EnrollConfig).link_ttl_seconds == 7 * 24 * 3600
    assert read_reload_status(config.data_path) == status
    state = read_state(config.data_path)
    assert state is not None and state["config"] == fingerprint(running) and state["restart_pending"] == []
    (record,) = [r for r in caplog.records if "reload refused" in r.getMessage()]
    assert record.levelno == logging.ERROR and expected in record.getMessage()


async def test_reload_without_a_loader_only_rereads_certificates(server: Server, config: Config) -> None:
    _edit(config, "access_log = false", 'access_log = false\nlevel = "DEBUG"')
    status = await server.reloader.reload()
    assert status["ok"] and status["config"] == "not read" and server.ctx.config.logging.level == "INFO"


# ---- as an administrator runs it ------------------------------------------------------------------
async def _start(data: Path, env: dict[str, str]) -> Served:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm", "serve", "--data-dir", str(data),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
    )
    served = Served(proc, env)
    await served.wait_for("listening:", count=5, timeout=60)
    for _ in range(200):
        state = read_state(data)
        if state is not None and state.get("pid") == proc.pid:
            return served
        await asyncio.sleep(0.05)
    raise AssertionError("no run/state.json")


def _cli(*args: str, env: dict[str, str]):
    return asyncio.to_thread(mdm, *args, env=env)


@pytest.fixture
def served_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if PG_URL:
        return base_env(MDM_DATABASE_URL=request.getfixturevalue("database_url"))
    return base_env()


async def test_mdm_reload_reports_what_the_server_did(tmp_path: Path, served_env: dict[str, str]) -> None:
    env = served_env
    data = tmp_path / "d"
    r = await _cli("init", "--data-dir", str(data), "--hostname", "localhost", env=env)
    assert r.returncode == 0, r.stderr
    no_server = await _cli("reload", "--data-dir", str(data), env=env)
    assert no_server.returncode == 1
    assert error_lines(no_server) == [f"mdm: error: no running server for {data} (no live pid in mdm.pid)"]

    served = await _start(data, env)
    pid = served.proc.pid
    try:
        r = await _cli("reload", "--data-dir", str(data), env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [f"server (pid {pid}) reloaded; configuration unchanged",
                                         "certificates: re-read"]
        # the same file and environment: no warning from a command that reads the data directory
        quiet = await _cli("tokens", "create", "--local", "one", "--scope", "events:read",
                           "--data-dir", str(data), env=env)
        assert quiet.returncode == 0, quiet.stderr
        assert "warning" not in quiet.stderr

        toml = data / "mdm.toml"
        text = toml.read_text()
        toml.write_text(text.replace('level = "INFO"', 'level = "DEBUG"').replace(
            '[listeners.kes]        # Android agent protocol (slot "M"), mutual TLS once a device holds a '
            'certificate\nenabled = true\nbind = "0.0.0.0"',
            '[listeners.kes]        # Android agent protocol (slot "M"), mutual TLS once a device holds a '
            'certificate\nenabled = true\nbind = "127.0.0.1"'))
        assert toml.read_text().count("127.0.0.1") == text.count("127.0.0.1") + 1
        # edited, not reloaded: the CLI says the server runs with something else
        warned = await _cli("tokens", "create", "--local", "two", "--scope", "events:read",
                            "--data-dir", str(data), env=env)
        assert warned.returncode == 0, warned.stderr
        assert (f"mdm: warning: the server running on this data directory (pid {pid}) uses another"
                in warned.stderr)
        assert "not loaded yet: listeners.kes.bind, logging.level (run `mdm reload`" in warned.stderr

        r = await _cli("reload", "--data-dir", str(data), env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [
            f"server (pid {pid}) reloaded; applied: logging.level",
            "needs a restart to take effect: listeners.kes.bind (e.g. `systemctl restart mdm`)",
            "certificates: re-read",
        ]
        await served.wait_for("configuration reloaded: applied logging.level")
        await served.wait_for("needs a restart to take effect: listeners.kes.bind")
        # the server runs with the new level (the logger itself: test_reload_applies_hot_keys...)
        state = read_state(data)
        assert state is not None
        assert state["config"]["logging.level"] == hashlib.sha256(json.dumps("DEBUG").encode()).hexdigest()
        waiting = await _cli("enroll", "ios", "--user", "alice", "--no-qr", "--data-dir", str(data), env=env)
        assert waiting.returncode == 0, waiting.stderr
        assert "loaded, waiting for a restart: listeners.kes.bind" in waiting.stderr
        assert "not loaded yet" not in waiting.stderr

        # a typo while the server runs: refused, where it is, the old configuration kept
        toml.write_text(toml.read_text().replace('level = "DEBUG"', 'levle = "WARNING"'))
        line = next(i for i, t in enumerate(toml.read_text().splitlines(), 1) if t.startswith("levle"))
        r = await _cli("reload", "--data-dir", str(data), env=env)
        assert r.returncode == 1
        (error,) = error_lines(r)
        assert error == (
            f"mdm: error: reload refused, the server (pid {pid}) keeps running with its previous "
            f"configuration: invalid configuration in {toml}: logging.levle: unknown key (check the "
            "spelling; see the commented mdm.toml written by mdm init) (got 'WARNING') "
            f"[line {line}]"
        )
        assert "needs a restart to take effect (from an earlier reload): listeners.kes.bind" in r.stdout
        await served.wait_for("configuration reload refused, the server keeps its running configuration")
        status = json.loads((data / "run" / "reload.json").read_text())
        assert status["config"] == "refused" and "logging.levle" in status["error"]
        assert served.proc.returncode is None
        tls = ssl.create_default_context(cafile=str(data / "ca" / "root.pem"))
        async with httpx.AsyncClient(verify=tls) as client:
            health = await client.get(f"https://localhost:{env['MDM_ADMIN_PORT']}/readyz")
        assert health.status_code == 200
        assert not any("Traceback" in line for line in served.lines)
    finally:
        if served.proc.returncode is None:
            served.proc.send_signal(signal.SIGTERM)
        assert await served.finish() == 0
    assert not (data / "mdm.pid").exists() and read_state(data) is None
    assert re.search(r"stopped", "\n".join(served.lines[-3:]))
