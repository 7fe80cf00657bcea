"""Configuration: a TOML file in the data directory, overridden by environment variables.

This module holds the models of the core tables and the ``Section`` seam of the feature tables;
``mdm.config_load`` reads the file and the environment into them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mdm.config_template import CONFIG_TEMPLATE as CONFIG_TEMPLATE  # re-exported: init writes it

CONFIG_FILE = "mdm.toml"
DEFAULT_DATA_DIR = "/var/lib/mdm"

class ConfigError(Exception):
    """A configuration problem an administrator must fix; the message names the key."""


class Section(BaseModel):
    """A table of mdm.toml. A feature's own section sets ``name`` (its table name) and is handed to
    ``load_config`` in a ``Sections`` registry; ``Config.section(Model)`` returns it, typed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name: ClassVar[str] = ""

    def check(self, config: Config) -> None:
        """What the section refuses given the rest of the configuration (raise ``ValueError``
        with the message for the operator); called by ``load_config``."""


_Section = Section
S = TypeVar("S", bound=Section)


class Sections:
    """The feature sections a configuration may hold: table name -> model class. Built once where
    the application is composed (``mdm.sections``) and passed in; there is no global registry."""

    def __init__(self, *models: type[Section]) -> None:
        self.models: dict[str, type[Section]] = {}
        for model in models:
            if not model.name:
                raise ValueError(f"{model.__name__} has no section name")
            if model.name in self.models or model.name in Config.model_fields:
                raise ValueError(f"section [{model.name}] is declared twice")
            self.models[model.name] = model

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def __iter__(self) -> Iterator[tuple[str, type[Section]]]:
        return iter(self.models.items())


Port = int


def _check_port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port between 1 and 65535 (0 picks a free port)")
    return value


class ListenerConfig(_Section):
    enabled: bool = True
    bind: str = "0.0.0.0"  # noqa: S104 - a server listens on all interfaces by default
    port: Port = 443
    # "tls": the service terminates TLS itself; "plain": a trusted reverse proxy terminates it.
    mode: Literal["tls", "plain"] = "tls"
    # Addresses/networks whose identity headers (Client-Cert, X-Forwarded-For) are trusted.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Accept Authorization: Negotiate (Kerberos Constrained Delegation) from the trusted proxies.
    kcd: bool = False

    _port = field_validator("port")(_check_port)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network") from exc
        return value

    @model_validator(mode="after")
    def _kcd_needs_a_proxy(self) -> ListenerConfig:
        return _check_kcd(self)


class WebListenerConfig(_Section):
    enabled: bool = True
    bind: str = "0.0.0.0"  # noqa: S104
    http_port: Port = 8060
    https_port: Port = 8061
    http_enabled: bool = True
    https_enabled: bool = True
    # Reverse proxies that terminate TLS in front of http_port: only from these is a forwarded
    # "proto=https" believed (enrollment profiles are served over HTTPS only).
    trusted_proxies: list[str] = Field(default_factory=list)
    kcd: bool = False  # one-time links need the link user's Negotiate principal (see [kerberos])

    _ports = field_validator("http_port", "https_port")(_check_port)
    _proxies = field_validator("trusted_proxies")(lambda value: ListenerConfig._networks(value))

    @model_validator(mode="after")
    def _kcd_needs_a_proxy(self) -> WebListenerConfig:
        return _check_kcd(self)


_L = TypeVar("_L", ListenerConfig, WebListenerConfig)


def _check_kcd(listener: _L) -> _L:
    """Negotiate is believed only from trusted proxies: kcd without one would refuse everyone."""
    if listener.kcd and not listener.trusted_proxies:
        raise ValueError("kcd = true needs trusted_proxies (the publishing proxy's addresses)")
    return listener


# Each listener's own port (DESIGN §11), also when its section is given without one.
DEFAULT_PORTS = {"ios": 443, "kes": 13292, "admin": 13299}


class ListenersConfig(_Section):
    ios: ListenerConfig = Field(default_factory=lambda: ListenerConfig(port=DEFAULT_PORTS["ios"]))
    kes: ListenerConfig = Field(default_factory=lambda: ListenerConfig(port=DEFAULT_PORTS["kes"]))
    web: WebListenerConfig = Field(default_factory=WebListenerConfig)
    admin: ListenerConfig = Field(default_factory=lambda: ListenerConfig(port=DEFAULT_PORTS["admin"]))

    @model_validator(mode="before")
    @classmethod
    def _own_default_ports(cls, data: Any) -> Any:
        """A ``[listeners.admin]`` table without ``port`` gets 13299, not ListenerConfig's 443."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, port in DEFAULT_PORTS.items():
            section = out.get(name)
            if isinstance(section, dict) and "port" not in section:
                out[name] = {**section, "port": port}
        return out


class DatabaseConfig(_Section):
    # Empty means the embedded SQLite database in the data directory.
    url: str = ""
    pool_size: int = Field(default=10, ge=1, le=200)
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        return value


class LoggingConfig(_Section):
    json_lines: bool = Field(default=False, alias="json")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class PkiConfig(_Section):
    key_type: Literal["rsa", "ec"] = "rsa"
    rsa_bits: int = Field(default=2048, ge=2048, le=8192)
    # Passphrase that encrypts CA keys at rest; read from the file if passphrase_file is set.
    passphrase: str = ""
    passphrase_file: str = ""
    root_validity_days: int = Field(default=3650, ge=30)
    issuing_validity_days: int = Field(default=1825, ge=30)
    server_validity_days: int = Field(default=825, ge=1)
    extra_sans: list[str] = Field(default_factory=list)
    # CRL distribution point written into issued certificates; empty: derived from hostname and
    # the web listener's HTTP port (http://HOST:8060/crl/issuing.crl).
    crl_url: str = ""
    crl_validity_hours: int = Field(default=72, ge=2, le=24 * 90)
    # How often each replica re-reads revocations made elsewhere (other replicas, the CLI).
    revocation_refresh_seconds: float = Field(default=10.0, ge=0.5, le=3600)
    # How often the renewal worker looks for certificates inside their renewal window.
    renewal_check_seconds: float = Field(default=3600.0, ge=0.5)
    # Ask a device again if it has not renewed this long after the last request.
    renewal_retry_hours: float = Field(default=24.0, ge=0.01)
    # Also refuse revoked certificates during the TLS handshake on the KES listener (CRL check).
    # Off by default: the KES handlers answer a revoked certificate 403 certificate_revoked.
    kes_tls_crl_check: bool = False
    # Requests an enterprise CA holds pending: how often to ask it again, and when to give up.
    request_poll_seconds: float = Field(default=60.0, ge=0.5, le=86400)
    request_max_days: float = Field(default=14.0, gt=0, le=365)


class LimitsConfig(_Section):
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)


class ApiConfig(_Section):
    page_size_default: int = Field(default=50, ge=1, le=1000)
    page_size_max: int = Field(default=500, ge=1, le=10000)
    # Addresses/networks that may read /metrics without a token (a Prometheus scraper's address);
    # anyone else needs a token with the metrics:read (or admin) scope.
    metrics_allow: list[str] = Field(default_factory=list)

    _metrics_allow = field_validator("metrics_allow")(lambda value: ListenerConfig._networks(value))


class KerberosConfig(_Section):
    """The service's Kerberos identity for listeners with ``kcd = true`` (docs/PKI.md)."""

    keytab: str = ""  # relative paths are under the data directory
    service_principal: str = ""  # default HTTP/<hostname> (in the keytab's default realm)
    realms: list[str] = Field(default_factory=list)  # alice@REALM -> user alice
    user_map: dict[str, str] = Field(default_factory=dict)  # principal -> user name, exceptions


class ClientConfig(_Section):
    """How the CLI reaches a running server."""

    url: str = ""  # default: https://127.0.0.1:{admin port}
    token_file: str = ""  # default: ~/.config/mdm/token
    ca_file: str = ""  # default: DATA_DIR/ca/root.pem


class Config(_Section):
    data_dir: str = DEFAULT_DATA_DIR
    hostname: str = "localhost"
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    listeners: ListenersConfig = Field(default_factory=ListenersConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    pki: PkiConfig = Field(default_factory=PkiConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    kerberos: KerberosConfig = Field(default_factory=KerberosConfig)
    client: ClientConfig = Field(default_factory=ClientConfig)
    # Sections owned by feature packages (ios, apns, smtp, ...): validated by the models handed to
    # ``load_config`` (a ``Sections``); read with ``section(Model)``.
    extensions: dict[str, Section] = Field(default_factory=dict, exclude=True)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        value = value.strip()
        if not value or " " in value or "/" in value:
            raise ValueError("must be a DNS name or IP address")
        return value

    # ---- derived paths -------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.data_path / 'mdm.sqlite3'}"

    def resolve(self, path: str) -> Path:
        """A file named in the configuration: relative paths are under the data directory."""
        found = Path(path)
        return found if found.is_absolute() else self.data_path / found

    @property
    def ca_dir(self) -> Path:
        return self.data_path / "ca"

    @property
    def certs_dir(self) -> Path:
        return self.data_path / "certs"

    def ca_passphrase(self) -> bytes | None:
        if self.pki.passphrase_file:
            try:
                text = Path(self.pki.passphrase_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"pki.passphrase_file: cannot read {self.pki.passphrase_file}: {exc.strerror}"
                ) from exc
            return text.encode() or None
        return self.pki.passphrase.encode() or None

    def section(self, model: type[S]) -> S:
        """The validated ``[model.name]`` table; its defaults when the configuration was built
        without it (a ``Config()`` in a test, a section the file leaves out)."""
        found = self.extensions.get(model.name)
        if not isinstance(found, model):
            found = self.extensions[model.name] = model()
        return found
