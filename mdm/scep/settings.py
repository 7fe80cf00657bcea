"""The ``[scep]`` configuration section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from mdm.config import Config, ConfigError, Section


class ScepConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name = "scep"

    enabled: bool = True
    # A shared challenge accepted in addition to the one-time ones (empty: none). Prefer
    # static_challenge_file; a shared secret cannot be single-use, so rotate it.
    static_challenge: str = ""
    static_challenge_file: str = ""
    cert_type: Literal["mobile", "mail", "vpn"] = "mobile"
    # Validity of certificates issued through SCEP; 0 = the issuance default for cert_type.
    validity_days: int = Field(default=0, ge=0, le=3650)
    # Answer PENDING and keep the request until an administrator approves or rejects it.
    manual_approval: bool = False
    # Refuse messages whose signingTime is further than this from our clock (badTime); 0: no check.
    max_clock_skew_seconds: int = Field(default=86400, ge=0)
    max_message_bytes: int = Field(default=65536, ge=4096, le=1024 * 1024)
    min_rsa_bits: int = Field(default=2048, ge=1024, le=8192)

    def static_secret(self) -> str:
        if self.static_challenge_file:
            try:
                return Path(self.static_challenge_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"scep.static_challenge_file: cannot read {self.static_challenge_file}: {exc.strerror}"
                ) from exc
        return self.static_challenge



def settings(config: Config) -> ScepConfig:
    return config.section(ScepConfig)


def public_url(config: Config, port: int | None = None) -> str:
    """The SCEP URL devices are given (enrollment profiles): the iOS listener at ``hostname``.

    ``port`` overrides the configured one (e.g. the port actually bound, or a reverse proxy's).
    """
    port = config.listeners.ios.port if port is None else port
    host = f"[{config.hostname}]" if ":" in config.hostname else config.hostname
    return f"https://{host}/scep" if port in (443, 0) else f"https://{host}:{port}/scep"
