"""Configuration sections owned by enrollment: ``[enroll]`` and ``[smtp]`` (``[apns]`` is
``mdm.push.config``)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from mdm.config import Config, Section

# Every AccessRights bit Apple defines (1 .. 4096).
ALL_ACCESS_RIGHTS = 8191


class _Section(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


def _url(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and not value.startswith(("https://", "http://")):
        raise ValueError("must be an absolute http(s):// URL")
    return value


class EnrollConfig(_Section):
    name = "enroll"

    # One-time links live a week by default: long enough for a user to open the mail on the
    # device, short enough that a forgotten link stops being a key to the fleet.
    link_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60, le=90 * 24 * 3600)
    # Device identity in the profile: a PKCS#12 issued by the internal CA, or a SCEP payload.
    identity: Literal["pkcs12", "scep"] = "pkcs12"
    # "legacy" (PBE-SHA1-3DES, SHA-1 MAC) is what every iOS version imports; "aes"
    # (PBES2/PBKDF2-SHA256/AES-256-CBC, SHA-256 MAC) is refused by older Apple Security frameworks.
    pkcs12_encryption: Literal["legacy", "aes"] = "legacy"
    identity_validity_days: int = Field(default=365, ge=1, le=3650)
    identity_key_bits: int = Field(default=2048, ge=2048, le=4096)
    scep_challenge_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # Public URLs; empty means derived from `hostname` and the listener ports. Set them when a
    # reverse proxy publishes the listeners under other names or ports.
    server_url: str = ""  # com.apple.mdm ServerURL, default https://HOST[:PORT]/mdm/server
    checkin_url: str = ""  # default https://HOST[:PORT]/mdm/checkin
    scep_url: str = ""  # default https://HOST[:PORT]/scep
    # Where one-time links point; https:// only (profiles carry a private key). Default
    # https://HOST:WEB_HTTPS_PORT, or https://HOST when only the plain-HTTP port is enabled.
    link_base_url: str = ""
    # Android (KES): where the agent reaches the kes listener, as written into the enrollment
    # package; empty / 0: `hostname` and the listener's port. Set them behind a publishing proxy.
    kes_host: str = Field(default="", max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]*$")
    kes_port: int = Field(default=0, ge=0, le=65535)
    # Android: put the user's PKCS#12 (certificate and key) into the package unless the request
    # says otherwise (`--pkcs12` / "pkcs12": true), for a reverse proxy that authenticates devices.
    android_pkcs12: bool = False
    access_rights: int = Field(default=ALL_ACCESS_RIGHTS, ge=1, le=ALL_ACCESS_RIGHTS)
    per_user_connections: bool = False
    organization: str = Field(default="mdm", min_length=1, max_length=128)
    # Reverse-DNS prefix of profile identifiers; default: the host name reversed.
    profile_identifier_prefix: str = Field(default="", max_length=200, pattern=r"^[A-Za-z0-9.-]*$")

    _urls = field_validator("server_url", "checkin_url", "scep_url", "link_base_url")(_url)

    @field_validator("server_url", "checkin_url", "scep_url", "link_base_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if value and not value.startswith("https://"):
            raise ValueError("devices only accept https:// URLs here")
        return value

    @field_validator("access_rights")
    @classmethod
    def _rights(cls, value: int) -> int:
        # Apple: "Specify '1' if you specify '2'. Specify '64' if you specify '128'."
        if value & 2 and not value & 1:
            raise ValueError("bit 2 (install profiles) requires bit 1 (inspect profiles)")
        if value & 128 and not value & 64:
            raise ValueError("bit 128 (install provisioning profiles) requires bit 64")
        return value


class SmtpConfig(_Section):
    name = "smtp"

    host: str = ""  # empty: e-mail delivery is off
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str = ""
    password_file: str = ""  # file holding the password (kept out of mdm.toml)
    from_address: str = Field(default="", alias="from", max_length=320)
    ca_file: str = ""  # CA bundle to verify the SMTP server; default: the system trust store
    timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    subject: str = Field(default="Enroll your device", max_length=200)

    @model_validator(mode="after")
    def _complete(self) -> SmtpConfig:
        if self.host and not self.from_address:
            raise ValueError("from: required when host is set (the sender address)")
        if self.password_file and not self.username:
            raise ValueError("username: required when password_file is set")
        return self


def enroll_config(config: Config) -> EnrollConfig:
    return config.section(EnrollConfig)


def smtp_config(config: Config) -> SmtpConfig:
    return config.section(SmtpConfig)


__all__ = ["ALL_ACCESS_RIGHTS", "EnrollConfig", "SmtpConfig", "enroll_config", "smtp_config"]
