"""The ``[kes]`` configuration section (the Android agent protocol on the ``kes`` listener)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from mdm.config import Section

SECTION = "kes"


class KesConfig(Section):
    model_config = ConfigDict(extra="forbid")
    name = SECTION

    # ---- requests ---------------------------------------------------------------------------
    # Largest request body on the agent's JSON endpoints (413 above it); inventory is in the sync.
    max_body_bytes: int = Field(default=256 * 1024, ge=4096, le=16 * 1024 * 1024)
    # Largest mugshot picture accepted (413 above it).
    max_mugshot_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=32 * 1024 * 1024)
    # ---- identity ---------------------------------------------------------------------------
    # Bounded caches of the hot path (entries) and how long a binding is cached (seconds).
    identity_cache_size: int = Field(default=20_000, ge=16)
    binding_cache_seconds: float = Field(default=60.0, ge=0)
    # Refused requests: the first few per source and reason are written as security events.
    security_events_verbatim_per_interval: int = Field(default=5, ge=0)
    security_events_interval_seconds: float = Field(default=60.0, gt=0)
    security_events_max_sources: int = Field(default=10_000, ge=16)
    # ---- sync -------------------------------------------------------------------------------
    # What the device is told to wait between syncs when nothing wakes it (seconds).
    sync_interval_seconds: int = Field(default=900, ge=10, le=86400)
    # A long-poll sync is held open at most this long (the agent asks for up to this; 0: off).
    long_poll_max_seconds: float = Field(default=300.0, ge=0, le=3600)
    # A device syncing more often than this (seconds) is answered 429 with Retry-After.
    min_sync_spacing_seconds: float = Field(default=0.5, ge=0, le=60)
    # Commands per sync answer, at most.
    max_commands_per_sync: int = Field(default=20, ge=1, le=500)
    # A delivered command without a result is offered again after this long (seconds).
    command_redelivery_seconds: float = Field(default=600.0, ge=5, le=7 * 86400)
    # Long-poll syncs held open at once in the process, at most (beyond it: answered at once).
    long_poll_max_waiters: int = Field(default=20_000, ge=1)
