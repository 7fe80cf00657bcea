"""The ``[eas]`` configuration section: the Exchange servers this service manages ActiveSync
devices through, how it authenticates to them, and how often it discovers. The password (when no
keytab is used) lives in a file of its own (mode 0600), named here; it is never written into
mdm.toml or logged."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from mdm.config import Section

SECTION = "eas"


class EasConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name = SECTION

    # Off: no runner, no discovery; EAS commands stay queued ("no handler").
    enabled: bool = False
    # "standard": one server (the first of ``servers``). "cluster": several Client Access
    # servers; a server that fails is skipped for ``failover_seconds`` and the next one is used.
    mode: Literal["standard", "cluster"] = "standard"
    # Host names (FQDN: Kerberos asks for a ticket to HTTP/<host>), optionally host:port.
    servers: list[str] = Field(default_factory=list)
    transport: Literal["https", "http"] = "https"
    # WSMan port; 0: the scheme's default (443 for https, 80 for http; Exchange's PowerShell
    # virtual directory is /PowerShell on the web server, not WinRM's 5985/5986).
    port: int = Field(default=0, ge=0, le=65535)
    path: str = "/PowerShell"
    configuration_name: str = "Microsoft.Exchange"
    # CA bundle that verifies the server's certificate (https); empty: the system's trust store.
    ca_file: str = ""
    # ---- authentication (Kerberos) ------------------------------------------------------------
    # The service account's principal (user@REALM).
    principal: str = ""
    # Either a keytab holding the principal's key, or a file holding its password (0600).
    keytab_file: str = ""
    password_file: str = ""
    # ---- scope and discovery -------------------------------------------------------------------
    # "domain": the current domain; "forest": Set-AdServerSettings -ViewEntireForest $true.
    scope: Literal["domain", "forest"] = "domain"
    discovery_interval_seconds: float = Field(default=3600.0, ge=60)
    # Mailboxes whose devices are read in one pipeline (Get-ActiveSyncDeviceStatistics statements).
    discovery_batch: int = Field(default=100, ge=1, le=1000)
    # ---- the runner ----------------------------------------------------------------------------
    # Pipelines running at once per server (the runspace pool's size).
    concurrency: int = Field(default=4, ge=1, le=64)
    connect_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    # One cmdlet's limit (a discovery of the whole organisation runs many of them).
    cmdlet_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    retries: int = Field(default=3, ge=0, le=20)
    backoff_initial_seconds: float = Field(default=1.0, gt=0, le=600)
    backoff_max_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Cluster mode: how long a failed server is passed over.
    failover_seconds: float = Field(default=60.0, ge=0, le=3600)
    # ---- commands ------------------------------------------------------------------------------
    # How often queued EAS commands are looked for when nothing woke the executor.
    command_poll_seconds: float = Field(default=5.0, gt=0, le=600)

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> EasConfig:
        if not self.enabled:
            return self
        if not self.servers:
            raise ValueError("[eas] enabled needs at least one server in servers")
        if self.mode == "standard" and len(self.servers) > 1:
            raise ValueError('[eas] mode "standard" takes one server; use mode = "cluster" for several')
        if not self.principal:
            raise ValueError("[eas] enabled needs principal (the service account, user@REALM)")
        if bool(self.keytab_file) == bool(self.password_file):
            raise ValueError("[eas] needs exactly one of keytab_file and password_file")
        return self

    def endpoint(self, server: str) -> tuple[str, int]:
        """(host, port) of a configured server entry."""
        host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
        if port:
            return host, int(port)
        return server, self.port or (443 if self.transport == "https" else 80)
