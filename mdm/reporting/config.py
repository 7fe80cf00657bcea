"""The ``[reporting]`` configuration section: where and how the event outbox is delivered to the
core server (DESIGN.md §10). Secrets (the HMAC key, the Open API password) live in files of
their own (mode 0600), named here; they are never written into mdm.toml or logged."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from mdm.config import Section

SECTION = "reporting"


class ReportingConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name = SECTION

    # "none": events stay in the outbox (pruned after retention only once delivered);
    # "generic": the documented HTTPS JSON endpoint (docs/reporting.md);
    # "ksc": the reference product's Open API (KSCBasic login, EventNotificationsApi.PublishEvent).
    transport: Literal["none", "generic", "ksc"] = "none"
    # The receiver: for "generic" the full URL events are POSTed to; for "ksc" the Open API base
    # (e.g. https://ksc.example.com:13299), under which /api/v1.0/... is called.
    url: str = ""
    # CA bundle that verifies the receiver's certificate (empty: the system's trust store).
    ca_file: str = ""
    # Client certificate and key for mutual TLS (PEM). Empty with "generic": a "core link" client
    # certificate is issued from the internal CA at start-up and kept in DATA_DIR/reporting/.
    client_certificate_file: str = ""
    client_key_file: str = ""
    # "generic": the HMAC-SHA256 key (file of its own, 0600); empty: no signature header.
    hmac_key_file: str = ""
    # "ksc": the Open API account; the password in a file of its own (0600).
    ksc_user: str = ""
    ksc_password_file: str = ""
    ksc_domain: str = ""
    ksc_internal: bool = False
    # ---- delivery ---------------------------------------------------------------------------
    # Events per request, at most.
    batch_size: int = Field(default=500, ge=1, le=10_000)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # Exponential backoff with jitter between failed attempts: initial * 2^n, capped, +-jitter.
    backoff_initial_seconds: float = Field(default=1.0, gt=0, le=3600)
    backoff_max_seconds: float = Field(default=300.0, gt=0, le=86400)
    # An event the receiver refuses (a 4xx that is not about authentication or throttling) is
    # dead-lettered after this many refusals; any undelivered event older than the age is
    # dead-lettered too. An outage only ages events: it never counts as a refusal.
    dead_letter_after_attempts: int = Field(default=5, ge=1, le=1000)
    dead_letter_after_seconds: float = Field(default=14 * 86400, ge=60)
    # Delivered events are deleted after this long (the outbox is not an archive).
    retention_seconds: float = Field(default=7 * 86400, ge=0)
    # How often the worker looks for new events when the outbox was empty (a commit wakes it
    # sooner on this replica).
    poll_seconds: float = Field(default=1.0, gt=0, le=60)
