"""The ``[apns]``, ``[fcm]`` and ``[push]`` configuration sections.

Enrollment only needs the push certificate (its subject UID is the MDM ``Topic`` written into
profiles); the APNs client, the FCM client and the dispatcher read the rest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from mdm.config import Config, Section

APNS_PRODUCTION = "https://api.push.apple.com"
APNS_DEVELOPMENT = "https://api.sandbox.push.apple.com"


class ApnsConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    name = "apns"

    # The MDM push certificate (PEM); its subject UID is the topic written into profiles. The key
    # is in the same file or in key_file (set both with `mdm push apns set-cert FILE`).
    certificate_file: str = ""
    key_file: str = ""
    # Apple's production or development (sandbox) gateway; base_url overrides both (tests, fakes).
    environment: Literal["production", "development"] = "production"
    base_url: str = ""
    # apns-expiration: how long Apple keeps a push for an offline device (0: deliver now or never).
    expiration_seconds: int = Field(default=7 * 24 * 3600, ge=0, le=30 * 24 * 3600)
    # Long-lived HTTP/2 connections; each carries as many streams as Apple allows.
    connections: int = Field(default=2, ge=1, le=32)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # CA bundle to verify the gateway with (empty: the system's; tests point it at a test CA).
    ca_file: str = ""

    def endpoint(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return APNS_PRODUCTION if self.environment == "production" else APNS_DEVELOPMENT


class FcmConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name = "fcm"

    # The Firebase service-account JSON (project_id, client_email, private_key, token_uri).
    service_account_file: str = ""
    # Overrides of Google's endpoints (tests, fakes): the FCM API and the OAuth2 token endpoint
    # (empty: https://fcm.googleapis.com and the service account's token_uri).
    base_url: str = ""
    token_url: str = ""
    ttl_seconds: int = Field(default=7 * 24 * 3600, ge=0, le=28 * 24 * 3600)
    collapse_key: str = "mdm-wake"
    # Google's limits: messages per minute for the project, and per device.
    project_per_minute: int = Field(default=600_000, ge=1)
    device_per_minute: int = Field(default=240, ge=1)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    ca_file: str = ""


# [push] keys the dispatcher reads from its config at each use: `mdm reload` applies them to the
# server's dispatcher, and to the worker processes over their stdin (no restart).
HOT_KEYS = ("retry_seconds", "retry_max_seconds", "silent_after_hours", "sweep_interval_seconds",
            "batch_size", "concurrency", "repush_per_second")


DEFAULT_WORKER_NICE = 10  # PostgreSQL's (see ``PushConfig.worker_nice``)


class PushConfig(Section):
    """The dispatcher, and the outbound proxy both services use (the reference product's
    ApnProxyHost, ApnProxyPort, ApnProxyLogin, ApnProxyPwd)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name = "push"

    proxy_host: str = ""
    proxy_port: int = Field(default=3128, ge=1, le=65535)
    proxy_login: str = ""
    proxy_password: str = ""
    proxy_password_file: str = ""
    # Re-push a device that stays silent while it has queued commands: after retry_seconds,
    # doubling up to retry_max_seconds (with jitter).
    retry_seconds: float = Field(default=300.0, ge=1)
    retry_max_seconds: float = Field(default=6 * 3600.0, ge=1)
    # Devices silent for longer than this get a wake-up from the daily sweep.
    silent_after_hours: float = Field(default=24.0, gt=0)
    sweep_interval_seconds: float = Field(default=24 * 3600.0, ge=1)
    # Re-pushes (of devices still silent with commands queued) sent per second at most, across
    # the fleet: after a bulk command to 10^6 devices most stay silent, and an unpaced wave of
    # re-pushes would take the server's CPU from the devices that answer. First wake-ups are
    # never held back by it. 0: unpaced.
    repush_per_second: float = Field(default=500.0, ge=0)
    # Where the dispatcher's worker runs: "inline" (the server's event loop) or "process" (a
    # process of its own beside the server, which then only records owed wake-ups).
    worker: Literal["inline", "process"] = "inline"
    # With worker = "process": how many worker processes (PostgreSQL only: they share the owed rows
    # through FOR UPDATE SKIP LOCKED; SQLite has one writer). repush_per_second is split between them.
    workers: int = Field(default=1, ge=1, le=64)
    # With worker = "process": the worker processes' nice value (0-19; default 10 on PostgreSQL,
    # 0 on SQLite). When the host's CPUs are saturated, the server's own work (check-ins, answers,
    # a bulk operation's queuing) goes first and the pushes use what is left; an idle host runs
    # them at full speed (a bulk Block to 10^6 devices on 2 cores: queued in 56.7-57.2 s and
    # woken in 66.2-67.8 s at 10, 62.2-62.3 s and 68.7-71.4 s at 0). SQLite refuses more than 0:
    # there the worker holds the database's one write lock, and a worker waiting for a CPU while
    # holding it would hold the server's writes up.
    worker_nice: int | None = Field(default=None, ge=0, le=19)
    # How long a taken wake-up is held by the worker sending it: one whose worker died is sent
    # again (by any worker) once this has passed.
    lease_seconds: float = Field(default=300.0, ge=1, le=24 * 3600)
    # Owed wake-ups taken per batch, and pushes in flight at once.
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    concurrency: int = Field(default=1000, ge=1, le=100_000)
    # Warn (log and event) this many days before the push certificate expires.
    expiry_warning_days: list[int] = Field(default_factory=lambda: [30, 7, 1])

    def nice(self, database_url: str) -> int:
        """The worker processes' nice value: ``worker_nice``, or its default for the engine."""
        if self.worker_nice is not None:
            return self.worker_nice
        return 0 if database_url.startswith("sqlite") else DEFAULT_WORKER_NICE

    def check(self, config: Config) -> None:
        if self.worker_nice and config.database_url.startswith("sqlite"):
            raise ValueError(f"worker_nice = {self.worker_nice} needs PostgreSQL: on SQLite the push worker "
                             "holds the one write lock, and the server's writes would wait while it waits "
                             "for a CPU (set worker_nice = 0)")
        if self.workers == 1:
            return
        if self.worker != "process":
            raise ValueError(f'workers = {self.workers} needs worker = "process" (the inline worker is the '
                             "server's own event loop: one)")
        if config.database_url.startswith("sqlite"):
            raise ValueError(f"workers = {self.workers} needs PostgreSQL: SQLite has one writer, so push "
                             "worker processes would only wait for each other's lock (set workers = 1)")

    def worker_share(self) -> PushConfig:
        """What one of ``workers`` worker processes runs with: its part of the re-push budget, so
        that the fleet-wide rate holds."""
        if self.workers == 1:
            return self
        return self.model_copy(update={"repush_per_second": self.repush_per_second / self.workers})


def apns_config(config: Config) -> ApnsConfig:
    return config.section(ApnsConfig)


def fcm_config(config: Config) -> FcmConfig:
    return config.section(FcmConfig)


def push_config(config: Config) -> PushConfig:
    return config.section(PushConfig)
