"""The CLI starts fast: ``mdm --help`` and the parsers of every command import no server, database,
crypto, HTTP-library or pydantic module, and a client command that runs imports no server,
database or crypto module. The import sets are the hard check; a wall-clock test backs them up
unless the machine is clearly overloaded. Also: the lists the light parsers keep in step with the
modules they stand for."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdm.cli import certs_cmd, client_commands, enroll_cmd, main

ROOT = Path(__file__).resolve().parent.parent

# Nothing of these for help and parsers...
HEAVY = ("sqlalchemy", "aiohttp", "alembic", "aiosqlite", "asyncpg", "cryptography", "pydantic", "httpx",
         "mdm.server", "mdm.db", "mdm.config", "mdm.pki", "mdm.core", "mdm.ios", "mdm.sim", "mdm.bench",
         "mdm.enroll", "mdm.scep", "mdm.api")
# ... and of these while a client command runs (with a plainly valid mdm.toml: the configuration
# model is loaded only to explain a problem).
SERVER_SIDE = ("sqlalchemy", "aiohttp", "alembic", "aiosqlite", "asyncpg", "cryptography", "pydantic",
               "httpx", "mdm.server", "mdm.db", "mdm.config", "mdm.pki", "mdm.core", "mdm.sim", "mdm.bench",
               "mdm.api", "mdm.ios", "mdm.enroll", "mdm.scep")

# Runs the CLI like `python -m mdm ARGS` and prints, whatever the exit, the modules it imported.
PROBE = """
import json, sys
try:
    from mdm.cli.main import main
    main(sys.argv[1:])
except SystemExit:
    pass
finally:
    print("\\nMODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""

CLIENT_HELP = [
    ["login"], ["devices"], ["devices", "list"], ["devices", "show"], ["devices", "delete"],
    ["devices", "move"], ["command"], ["command", "send"], ["command", "recall"], ["command", "log"],
    ["command", "types"], ["events"], ["tokens"], ["tokens", "list"], ["tokens", "create"],
    ["tokens", "revoke"], ["users"], ["users", "list"], ["users", "create"], ["users", "show"],
    ["users", "delete"], ["groups"], ["groups", "list"], ["groups", "create"], ["groups", "move"],
    ["groups", "delete"], ["enroll"], ["enroll", "ios"], ["enroll", "links"], ["enroll", "links", "list"],
    ["enroll", "links", "revoke"], ["certs"], ["certs", "list"], ["certs", "show"], ["certs", "revoke"],
    ["certs", "issue"], ["certs", "rules", "show"], ["certs", "rules", "set"], ["certs", "set"],
    ["certs", "import-ca"], ["sim", "ios"], ["bench", "ios"], ["push"], ["push", "status"],
    ["push", "apns", "set-cert"],
]


def probe(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)
    marker = proc.stderr.rindex("MODULES ")
    modules = set(json.loads(proc.stderr[marker + len("MODULES "):]))
    return proc, modules


def heavy(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("args", [["--help"], [], ["frobnicate"], ["--version"]], ids=" ".join)
def test_overview_imports_no_group(args: list[str]) -> None:
    proc, modules = probe(*args)
    assert heavy(modules, HEAVY) == []
    assert not [m for m in modules if m.startswith("mdm.cli.") and m.endswith("_cmd")], sorted(modules)
    if args == ["--help"]:
        for command in ("devices", "users", "groups", "enroll", "certs", "bench"):
            assert f"    {command} " in proc.stdout


@pytest.mark.parametrize("args", CLIENT_HELP, ids=" ".join)
def test_parsers_import_nothing_heavy(args: list[str]) -> None:
    proc, modules = probe(*args, "--help")
    assert "usage: mdm" in proc.stdout, proc.stderr
    assert heavy(modules, HEAVY) == [], f"mdm {' '.join(args)} --help"


def test_a_running_client_command_imports_no_server_code(tmp_path: Path) -> None:
    """Up to the request (here refused: nothing listens), a client command reads mdm.toml and
    opens a connection, nothing more."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")}
    env["HOME"] = str(tmp_path)
    (tmp_path / "mdm.toml").write_text('hostname = "mdm.example.com"\n[client]\ntoken_file = "~/t"\n'
                                       '[listeners.admin]\nport = 13300\n[ios]\n')
    for args in (["devices", "list"], ["users", "list"], ["groups", "list", "--tree"],
                 ["command", "types", "--args"], ["events", "--severity", "warning"],
                 ["enroll", "links", "list"], ["certs", "revoke", "abcdef12"], ["tokens", "list"],
                 ["push", "status"]):
        proc, modules = probe(*args, "--url", "https://127.0.0.1:9", "--token", "x" * 30,
                              "--data-dir", str(tmp_path), env=env)
        assert "connection refused" in proc.stderr, proc.stderr
        assert heavy(modules, SERVER_SIDE) == [], args


def _median_seconds(*args: str, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mdm", *args], capture_output=True, timeout=60, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def test_help_and_client_commands_start_within_half_a_second(tmp_path: Path) -> None:
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if load > 1.5 * cores:  # other work saturates the machine: wall time would measure that
        pytest.skip(f"machine overloaded (load {load:.1f} on {cores} cores): wall time would not mean much")
    # a client command all the way to its request (refused: nothing listens on port 9)
    running = ["devices", "list", "--url", "https://127.0.0.1:9", "--token", "x" * 30,
               "--data-dir", str(tmp_path)]
    for args in (["--help"], ["devices", "list", "--help"], ["groups", "move", "--help"],
                 ["certs", "revoke", "--help"], ["enroll", "links", "list", "--help"], running):
        seconds = _median_seconds(*args)
        assert seconds < 0.5, f"mdm {' '.join(args)}: {seconds:.2f}s"


# ---- the light parsers' copies stay in step ----------------------------------------------------
def test_summaries_are_the_groups_own_help() -> None:
    parser = main.build_parser()  # every group
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {choice.dest: choice.help for choice in sub._choices_actions}  # type: ignore[attr-defined]
    assert set(main.SUMMARIES) <= set(helps)
    for command, summary in main.SUMMARIES.items():
        assert helps[command] == summary, command
    assert set(main.COMMANDS) == set(helps)  # every command known, so that it loads alone


def test_constants_match_the_modules_they_stand_for() -> None:
    from mdm.db.models import Severity
    from mdm.enroll import service
    from mdm.pki.crl import REASONS, parse_reason
    from mdm.pki.slots import SLOTS

    assert certs_cmd.REASONS == tuple(REASONS)
    assert certs_cmd.SLOTS == tuple(SLOTS)
    assert enroll_cmd.PLATFORMS == tuple(service.PLATFORMS)
    assert client_commands.SEVERITIES == [s.value for s in Severity]
    for spelling in ("keyCompromise", "key-compromise", "key_compromise", "superseded", "aa_compromise"):
        assert certs_cmd.parse_reason(spelling) == parse_reason(spelling)


@pytest.mark.parametrize(("toml", "env"), [
    ("", {}),
    ('[client]\nurl = "https://mdm.example.com:9000"\nca_file = "/etc/mdm/root.pem"\n', {}),
    ('[listeners.admin]\nbind = "::1"\nport = 14000\nmode = "plain"\nenabled = true\n', {}),
    ('[listeners.admin]\nport = 14000\n', {"MDM_ADMIN_PORT": "15000"}),
    ('[listeners.admin]\nbind = "10.1.2.3"\n[client]\ntoken_file = "~/tok"\n', {"MDM_ADMIN_PORT": "13299"}),
    ('hostname = "x"\n[logging]\nlevel = "DEBUG"\n', {"MDM_HOSTNAME": "y"}),
])
def test_quick_view_agrees_with_the_configuration_model(
    tmp_path: Path, toml: str, env: dict[str, str]
) -> None:
    from mdm.cli.client_settings import ClientView, quick_view
    from mdm.config_sections import load as load_config

    (tmp_path / "mdm.toml").write_text(toml)
    quick = quick_view(str(tmp_path), env)
    assert quick is not None
    assert quick == ClientView.of(load_config(tmp_path, env=env))


@pytest.mark.parametrize(("toml", "env"), [
    ("[client]\nurl = 5\n", {}),
    ('[client]\nurll = "https://x"\n', {}),
    ('[listeners.admin]\nport = 70000\n', {}),
    ('[listeners.admin]\nport = "13299"\n', {}),
    ('[listeners.admin]\nmode = "tcp"\n', {}),
    ('[listeners.admin]\nprot = 1\n', {}),
    ("", {"MDM_ADMIN_PORT": "eighty"}),
    ("[client\n", {}),
    # a section without a port: the model's default for it (what the server uses) decides
    ('[listeners.admin]\nbind = "10.1.2.3"\n', {"MDM_ADMIN_PORT": ""}),
])
def test_quick_view_leaves_anything_unusual_to_the_model(
    tmp_path: Path, toml: str, env: dict[str, str]
) -> None:
    from mdm.cli.client_settings import quick_view

    (tmp_path / "mdm.toml").write_text(toml)
    assert quick_view(str(tmp_path), env) is None
