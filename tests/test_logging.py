"""Logging: JSON lines that parse, a request id on every request line (taken from a well-formed
X-Request-Id and echoed back), and no secret in any line."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import re
import signal
import sys

import httpx
import pytest
from conftest import client_ssl_context

from mdm.config import Config
from mdm.core import tokens
from mdm.logs import JsonFormatter, TextFormatter, redact, request_id_var, setup_logging


async def _serve_json_logs(config: Config) -> tuple[asyncio.subprocess.Process, list[str], int]:
    toml = config.data_path / "mdm.toml"
    toml.write_text(toml.read_text().replace("access_log = false", "access_log = true"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm", "serve", "--data-dir", str(config.data_path), "--json-logs",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert raw, "server exited:\n" + "\n".join(lines)
        lines.append(raw.decode().rstrip("\n"))
        found = re.search(r"listening: admin on https://127\.0\.0\.1:(\d+)", lines[-1])
        if found:
            return proc, lines, int(found.group(1))


def _secret(token: str) -> str:
    """The random part of ``mdm_<id>_<secret>``, whole: the secret's alphabet has "_" too, and a
    split on every "_" made a fragment of a character or two, found in any log (a flaky test)."""
    return token.split("_", 2)[2]


async def test_json_lines_request_ids_and_no_secrets(config: Config, db) -> None:
    async with db.transaction() as session:
        _, admin = await tokens.create(session, "log-admin", ["admin"])
    proc, lines, port = await _serve_json_logs(config)
    wrong = "mdm_deadbeef_ThisIsAWrongButSecretLookingToken"
    basic = base64.b64encode(b"operator:hunter2-password").decode()
    try:
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{port}", verify=client_ssl_context(config), timeout=30
        ) as client:
            auth = {"Authorization": f"Bearer {admin}"}
            r = await client.get("/api/v1/devices", headers={**auth, "X-Request-Id": "trace-42.a_B"})
            assert r.status_code == 200 and r.headers["X-Request-Id"] == "trace-42.a_B"
            r = await client.get("/api/v1/devices", headers={**auth, "X-Request-Id": "not valid; drop table"})
            generated = r.headers["X-Request-Id"]
            assert re.fullmatch(r"[0-9a-f]{16,}", generated)
            again = await client.get("/api/v1/devices", headers=auth)
            assert again.headers["X-Request-Id"] != generated
            r = await client.get("/api/v1/devices", headers={**auth, "X-Request-Id": "x" * 65})
            assert r.headers["X-Request-Id"] != "x" * 65
            r = await client.get(
                "/api/v1/devices", headers={"Authorization": f"Bearer {wrong}", "X-Request-Id": "r-401"}
            )
            assert r.status_code == 401 and r.json()["error"]["request_id"] == "r-401"
            r = await client.get("/api/v1/events", headers={"Authorization": f"Basic {basic}"})
            assert r.status_code == 401
            r = await client.post(
                "/api/v1/tokens", json={"name": "made", "scopes": ["events:read"]}, headers=auth
            )
            created = r.json()["token"]
            r = await client.get("/api/v1/events", params={"token": admin}, headers=auth)
            assert r.status_code == 400  # unknown parameter; its value must not be logged either
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        rest = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
        await proc.wait()
    lines += rest.splitlines()
    assert proc.returncode == 0
    entries = [json.loads(line) for line in lines if line.strip()]  # every line is one JSON object
    assert all({"ts", "level", "logger", "request_id", "msg"} <= set(e) for e in entries)
    access = [e for e in entries if e["logger"] == "mdm.access"]
    by_id = {e["request_id"]: e for e in access}
    assert by_id["trace-42.a_B"]["msg"].startswith("GET /api/v1/devices 200")
    assert by_id[generated]["msg"].startswith("GET /api/v1/devices 200")
    assert by_id["r-401"]["msg"].startswith("GET /api/v1/devices 401")
    refused = [e for e in entries if e["msg"].startswith("request refused") and e["request_id"] == "r-401"]
    assert refused and refused[0]["code"] == "unauthenticated"
    assert all(e["request_id"] == "-" for e in entries if "listening:" in e["msg"])  # not in a request
    everything = "\n".join(lines)
    for secret in (admin, _secret(admin), _secret(wrong), _secret(created), basic, "hunter2"):
        assert secret not in everything, f"secret leaked into the log: {secret[:6]}..."


@pytest.fixture
def records() -> logging.Logger:
    return logging.getLogger("mdm.test.logging")


def _format(formatter: logging.Formatter, logger: logging.Logger, *args: object, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(*args, extra=extra)  # type: ignore[arg-type]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue().strip()


def test_text_lines_carry_the_request_id(records: logging.Logger) -> None:
    token = request_id_var.set("rid-7")
    try:
        line = _format(TextFormatter(), records, "hello %s", "world", peer="10.0.0.1")
    finally:
        request_id_var.reset(token)
    assert re.search(r"WARNING mdm\.test\.logging \[rid-7\] hello world peer=10\.0\.0\.1$", line), line


def test_secrets_are_masked_in_messages_extras_and_tracebacks(records: logging.Logger) -> None:
    secret = "mdm_0123abcd_SuperSecretValue"
    try:
        raise RuntimeError(f"could not use postgresql+asyncpg://mdm:db-pass@db/mdm with {secret}")
    except RuntimeError:
        with_exc = sys.exc_info()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    records.addHandler(handler)
    records.propagate = False
    try:
        records.error("login with password=%s and Authorization: Bearer %s", "pw1", secret,
                      exc_info=with_exc, extra={"api_token": secret, "note": f"token {secret}"})  # fmt: skip
    finally:
        records.removeHandler(handler)
        records.propagate = True
    entry = json.loads(stream.getvalue())
    text = json.dumps(entry)
    for leaked in ("pw1", "SuperSecretValue", "db-pass"):
        assert leaked not in text, leaked
    assert entry["api_token"] == "***" and "mdm_0123abcd_***" in entry["note"]
    assert "postgresql+asyncpg://mdm:***@db/mdm" in entry["exc"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2", "password=***"),
        ("CA passphrase: opensesame", "CA passphrase: ***"),
        ('{"password": "a b c", "user": "x"}', '{"password": "***", "user": "x"}'),
        ("Authorization: Bearer abc.def", "Authorization: *** ***"),
        ("sent Basic dXNlcjpwYXNz to it", "sent Basic *** to it"),
        ("token mdm_0123abcd_s3cr3t used", "token mdm_0123abcd_*** used"),
        ("https://u:p4ss@proxy:3128/x", "https://u:***@proxy:3128/x"),
        ("listening: admin on https://0.0.0.0:13299", "listening: admin on https://0.0.0.0:13299"),
        ("token 'ci' lacks scope 'admin'", "token 'ci' lacks scope 'admin'"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_debug_level_keeps_the_http_client_wire_loggers_quiet() -> None:
    """At DEBUG, httpcore, h2 and hpack log request and answer headers (a core server's session
    token, an Authorization header): they stay at INFO whatever the service's level."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(level="DEBUG")
        for name in ("httpcore", "httpx", "h2", "hpack"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
