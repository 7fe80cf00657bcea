"""The deployment files stay in step with the CLI and the configuration contract."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

from mdm import config as config_module
from mdm import config_load
from mdm.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "mdm.service"
ENV_FILE = ROOT / "deploy" / "systemd" / "mdm.env"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_starts_mdm_serve_with_options_the_cli_accepts() -> None:
    service = _unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "mdm" and argv[1] == "serve"
    args = build_parser().parse_args(argv[1:])  # raises SystemExit on an unknown option
    assert args.func.__module__ == "mdm.cli.serve_cmd" and args.json_logs
    data_dir = argv[argv.index("--data-dir") + 1]
    assert service["ReadWritePaths"] == data_dir
    assert f"MDM_DATA_DIR={data_dir}" == service["Environment"]
    assert data_dir == config_module.DEFAULT_DATA_DIR


def test_unit_runs_unprivileged_with_graceful_stop_and_reload() -> None:
    service = _unit()["Service"]
    assert service["User"] != "root" and service["NoNewPrivileges"] == "true"
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"  # port 443 without root
    assert service["UMask"] == "0077"
    assert service["KillSignal"] == "SIGTERM" and "-HUP" in service["ExecReload"]
    grace = config_module.Config().limits.shutdown_grace_seconds
    assert float(service["TimeoutStopSec"]) > grace


def test_env_file_names_only_contract_variables() -> None:
    names = set(re.findall(r"^#?(MDM_[A-Z_]+)=", ENV_FILE.read_text(), re.MULTILINE))
    assert names == set(config_load.ENV_OVERRIDES)
