"""Helpers for tests and benchmarks: prepare a data directory in-process (what ``mdm init``
does, minus printing) and run a server on ephemeral ports."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mdm.config import CONFIG_FILE, Config
from mdm.config_sections import load as load_config
from mdm.pki.ca import CertificateAuthority
from mdm.pki.slots import SLOTS, issue_server_certificate

TEST_CONFIG = """\
hostname = "localhost"
[database]
url = "{database_url}"
[listeners.ios]
bind = "127.0.0.1"
port = 0
trusted_proxies = ["127.0.0.2/32"]
[listeners.kes]
bind = "127.0.0.1"
port = 0
[listeners.web]
bind = "127.0.0.1"
http_port = 0
https_port = 0
trusted_proxies = ["127.0.0.2/32"]
[listeners.admin]
bind = "127.0.0.1"
port = 0
[logging]
access_log = false
[limits]
shutdown_grace_seconds = 2.0
"""


def make_pki(directory: Path) -> None:
    """CA and server certificates (slow part of init), made once and copied per test."""
    ca = CertificateAuthority.create(directory / "ca", rsa_bits=2048)
    (directory / "certs").mkdir(parents=True, exist_ok=True)
    for slot in SLOTS:
        issue_server_certificate(ca, directory / "certs", slot, ["localhost", "127.0.0.1", "::1"])


def make_data_dir(target: Path, template_pki: Path, database_url: str, extra_config: str = "") -> Config:
    target.mkdir(parents=True, exist_ok=True)
    for sub in ("ca", "certs"):
        shutil.copytree(template_pki / sub, target / sub, dirs_exist_ok=True)
    (target / CONFIG_FILE).write_text(TEST_CONFIG.format(database_url=database_url) + extra_config)
    return load_config(target, env={k: v for k, v in os.environ.items() if not k.startswith("MDM_")})
