"""The ``[ios]`` configuration section (iOS check-in and command channel)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from mdm.config import Section

SECTION = "ios"


class IosConfig(Section):
    model_config = ConfigDict(extra="forbid")
    name = SECTION

    # UserAuthenticate (user channel on macOS / Shared iPad) is declined with 410 unless enabled.
    user_authenticate_enabled: bool = False
    # Largest request body accepted on /mdm/checkin and /mdm/server (413 above it).
    max_body_bytes: int = Field(default=1024 * 1024, ge=4096, le=64 * 1024 * 1024)
    # NotNow: the command is not offered again in the same exchange, and the re-push is scheduled
    # after base * 2^(n-1) seconds, at most max. At least 1 s: a zero back-off would offer a
    # NotNow'd command again within the exchange that just refused it.
    notnow_backoff_seconds: float = Field(default=60.0, ge=1)
    notnow_backoff_max_seconds: float = Field(default=3600.0, ge=1)
    # Mdm-Signature with a CMS signingTime older than this (or this far in the future) is a replay.
    signature_max_age: float = Field(default=600.0, ge=1)
    # last_seen_at is written behind, in batches, this often.
    last_seen_flush_seconds: float = Field(default=5.0, gt=0, le=300)
    # Bounded caches of the hot path (entries).
    identity_cache_size: int = Field(default=20_000, ge=16)
    # How long a certificate -> device binding is trusted from the cache. Revocation and expiry are
    # checked on every request regardless; only a re-binding done by another replica waits for this.
    binding_cache_seconds: float = Field(default=600.0, ge=0)
    # "This device's queue is empty" hint, invalidated on enqueue in this process and (PostgreSQL)
    # by NOTIFY from other replicas. 0 disables the hint: one indexed query per idle poll.
    queue_hint_seconds: float = Field(default=120.0, ge=0)
    # Parsed Idle reports by body (devices repeat the same Idle body); entries, 0 disables.
    parse_cache_size: int = Field(default=10_000, ge=0)
    # Nesting depth / node count limits for plists from devices.
    max_plist_depth: int = Field(default=32, ge=4, le=256)
    max_plist_nodes: int = Field(default=200_000, ge=100)
    # Security events of rejected requests: per source address (IPv6: its /64) and reason, the first
    # N per interval are written one by one, the rest counted into one aggregate event per
    # interval; at most max_sources keys are tracked (beyond: one catch-all count).
    security_events_verbatim_per_interval: int = Field(default=5, ge=0, le=1000)
    security_events_interval_seconds: float = Field(default=60.0, ge=1, le=3600)
    security_events_max_sources: int = Field(default=1000, ge=1, le=100_000)

