"""The README's "Try it without an Apple certificate", command for command, as subprocesses: a
fresh data directory, ``mdm init`` (development push identity), a real ``mdm serve`` on free
ports, ``mdm login``, ``mdm enroll``, the simulated iPhone, ``mdm devices list``,
``mdm command send`` and the answer in ``mdm command log``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_init_serve import PG_URL, TOKEN_RE, Served, base_env

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "### Try it without an Apple certificate"
# The README's commands, in order ({...}: what the reader fills in from the previous output).
COMMANDS = [
    "mdm init",
    "mdm serve &",
    "mdm login --token mdm_xxxxxxxx_...",
    "mdm enroll ios --user alice --no-qr",
    "mdm sim ios --url URL --ca $MDM_DATA_DIR/ca/root.pem --polls 30 --interval 2 &",
    "mdm devices list",
    "mdm command send ID RefreshDeviceInfo",
    "mdm command log ID",
]


def _readme_commands() -> list[str]:
    text = README.read_text()
    block = text[text.index(SECTION):].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("mdm ")]


def test_the_readme_shows_the_commands_this_test_runs() -> None:
    assert _readme_commands() == COMMANDS
    assert "export MDM_DATA_DIR=$HOME/mdm-try MDM_IOS_PORT=8443" in README.read_text()


async def _mdm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def _until(what: str, check, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


@pytest.fixture
def env(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The reader's shell: MDM_DATA_DIR exported, a home of its own (mdm login writes there), free
    ports instead of the defaults (other tests run on this machine)."""
    extra = {"MDM_DATA_DIR": str(tmp_path / "mdm-try"), "HOME": str(tmp_path / "home")}
    if PG_URL:
        extra["MDM_DATABASE_URL"] = request.getfixturevalue("database_url")
    return base_env(**extra)


@pytest.mark.slow
async def test_try_it_without_an_apple_certificate(env: dict[str, str]) -> None:
    data = Path(env["MDM_DATA_DIR"])
    # mdm init
    r = await _mdm("init", env=env)
    assert r.returncode == 0, r.stderr
    (token,) = TOKEN_RE.findall(r.stdout)
    assert "created a DEVELOPMENT push identity" in r.stdout
    assert "WARNING: iOS push uses a self-signed DEVELOPMENT identity" in r.stderr

    # mdm serve &
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm", "serve", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    served = Served(proc, env)
    sim: asyncio.subprocess.Process | None = None
    try:
        await served.wait_for("listening:", count=5, timeout=90)
        (startup,) = await served.wait_for("DEVELOPMENT push identity")
        assert "WARNING" in startup and "cannot be woken by push" in startup

        # mdm login --token ...
        r = await _mdm("login", "--token", token, env=env)
        assert r.returncode == 0, r.stderr
        assert (Path(env["HOME"]) / ".config" / "mdm" / "token").exists()

        # mdm enroll ios --user alice --no-qr
        r = await _mdm("enroll", "ios", "--user", "alice", "--no-qr", env=env)
        assert r.returncode == 0, r.stderr
        (url,) = re.findall(r"^https://\S+/e/\S+$", r.stdout, re.MULTILINE)
        assert "mdm: warning: apns.certificate_file is the self-signed DEVELOPMENT push identity" in r.stderr
        assert "warning: the server running" not in r.stderr  # same file, same environment

        # mdm sim ios --url URL --ca $MDM_DATA_DIR/ca/root.pem --polls 30 --interval 2 &
        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mdm", "sim", "ios", "--url", url, "--ca", str(data / "ca" / "root.pem"),
            "--polls", "60", "--interval", "1", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )

        # mdm devices list
        async def listed() -> str | None:
            r = await _mdm("devices", "list", env=env)
            assert r.returncode == 0, r.stderr
            rows = [line.split() for line in r.stdout.splitlines()[1:] if line.strip()]
            return rows[0][0] if rows and "alice" in rows[0] else None

        device_id = await _until("the simulated iPhone in `mdm devices list`", listed)

        # mdm command send ID RefreshDeviceInfo
        r = await _mdm("command", "send", device_id, "RefreshDeviceInfo", env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"queued RefreshDeviceInfo for device {device_id}: ")

        # mdm command log ID: completed once the simulator has polled
        async def completed() -> str | None:
            r = await _mdm("command", "log", device_id, env=env)
            assert r.returncode == 0, r.stderr
            return r.stdout if re.search(r"\bRefreshDeviceInfo\s+completed\b", r.stdout) else None

        log = await _until("RefreshDeviceInfo completed in `mdm command log`", completed)
        assert "acknowledged" in log.lower() or "completed" in log
    finally:
        if sim is not None and sim.returncode is None:
            sim.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(sim.wait(), 15)
            except TimeoutError:
                sim.kill()
                await sim.wait()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await served.finish() == 0
    assert not any("Traceback" in line for line in served.lines), "\n".join(served.lines)
    if sim is not None and sim.stdout is not None:
        out = (await sim.stdout.read()).decode()
        assert "signature verified" in out and "checked in" in out
        assert re.search(r"poll \d+: .*DeviceInformation -> Acknowledged", out), out
    assert os.path.isdir(data)
