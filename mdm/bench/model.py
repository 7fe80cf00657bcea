"""What a benchmark run is asked to do (``Options``) and what it found (``Report``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mdm.bench import identities
from mdm.sim.transport import Mode

Say = Callable[[str], None]


@dataclass
class Options:
    devices: int
    duration: float
    mode: Mode = "signature"
    plain: bool = False
    concurrency: int = 50
    url: str | None = None  # remote iOS listener, e.g. https://mdm.example.com
    admin_url: str | None = None
    token: str | None = None
    ca: Path | None = None
    server_pid: int | None = None
    database_url: str = ""
    data_dir: Path | None = None
    pool_size: int = 10
    key_type: identities.KeyType = "rsa"
    generator: Literal["python", "wrk"] = "python"
    wrk_threads: int = 2
    wrk_connections: int = 50
    emit_wrk: Path | None = None
    rt_command: str = "Block"
    rt_concurrency: int = 4
    rt_duration: float | None = None
    # Phase (b2) after (b), in rounds: the command queued for this many devices (untimed), then
    # polled and answered with the server's CPU counted for the device side only (0: skip it).
    rt_delivery: int = 500
    # Seconds of (b2)'s timed delivery, summed over its rounds (default: rt_duration, else duration).
    rt_delivery_duration: float | None = None
    background_rate: float = 200.0
    # Local runs: APNs configured against the contract fake (a subprocess), so that every enqueue
    # owes a wake-up and the server's push dispatcher sends it, as in production.
    apns_fake: bool = False
    enroll_concurrency: int = 4
    warmup: bool = True
    py_spy: Path | None = None  # record the server with py-spy during phase (a) into this file
    skip_idle: bool = False
    skip_rt: bool = False
    # Keep the temporary data directory (CA keys, admin token) and wrk scripts; a --data-dir given
    # by the user is never removed.
    keep_data: bool = False
    progress_interval: float = 1.0  # seconds between progress lines of a long phase


@dataclass
class Report:
    setup: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    round_trip: dict[str, Any] = field(default_factory=dict)
    background: dict[str, Any] = field(default_factory=dict)
    delivery: dict[str, Any] = field(default_factory=dict)
    rss_kib: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    profile_rt: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v}


class BenchError(Exception):
    """A usage problem (bad option combination)."""


class AdminError(Exception):
    """The server's admin API refused or failed a request the benchmark needs."""
