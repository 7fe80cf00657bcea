"""Phase (g)'s second half of ``mdm bench fleet``: cold first polls after a restart.

What it measures is the server after an outage, the moment its fleet returns: every poll the
first one since the server started, so its chain verification, signer key and binding are not
cached. Three choices keep that figure the server's, and large enough to mean something:

- **Signed before the timed window.** A real device signs its Idle poll on its own CPU; the
  bench's simulated devices share the server's cores, and an RSA signature (~1 ms) per poll inside
  the window took more CPU than the server's whole answer. Every member's idle body is signed
  (``Fleet.presign``) before the clock starts, with a fresh signing time (the server's replay
  window is 600 s); the server's work per poll is unchanged by this.
- **Started once the server is ready**, not the instant ``/healthz`` answers: the push worker
  processes up and reporting (``fleet.workers_up``) and the server's own CPU settled
  (``settle``: its start-up, the worker's recovery pass and the pool's first connections are not
  the polls' cost).
- **As many polls as asked** (``--cold-polls N``, default the answering count): the answering
  devices first, then the next fleet devices, whose queues the final recall emptied.

On PostgreSQL the CPU of the database's backends per poll is reported beside the server's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from mdm.bench import push_dispatch
from mdm.bench.stats import cpu_seconds
from mdm.db.engine import Database
from mdm.sim.fleet import Fleet, Member

Say = Callable[[str], None]

# The server is settled when it used less than this share of one core over SETTLE_WINDOW seconds.
SETTLED_SHARE = 0.05
SETTLE_WINDOW = 0.5


def _cpu(pid: int) -> float:
    return cpu_seconds(pid) or 0.0


async def settle(pid: int, *, limit_s: float = 30.0, share: float = SETTLED_SHARE,
                 window: float = SETTLE_WINDOW) -> float:
    """Wait until the server's CPU over ``window`` seconds is below ``share`` of a core (at most
    ``limit_s``). The seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        before = _cpu(pid)
        await asyncio.sleep(window)
        if _cpu(pid) - before < share * window:
            break
    return round(time.perf_counter() - t0, 2)


def cold_members(answered: list[Member], fleet_members: list[Member], count: int) -> list[Member]:
    """``count`` members for the cold polls: the answering ones first, then fleet devices not
    among them (in fleet order), each once."""
    chosen = answered[:count]
    seen = {m.udid for m in chosen}
    for member in fleet_members:
        if len(chosen) >= count:
            break
        if member.udid not in seen:
            seen.add(member.udid)
            chosen.append(member)
    return chosen


async def cold_polls(fleet: Fleet, members: list[Member], *, say: Say, pid: int,
                     database_url: str) -> dict[str, Any]:
    """One signed Idle poll per member, each signed beforehand; the server's CPU per poll and, on
    PostgreSQL, its backends' (``backend_cpu_us_per_poll``)."""
    say(f"(g) signing {len(members)} idle polls before the timed window...")
    t_sign = time.perf_counter()
    fleet.presign(members)
    signed_s = round(time.perf_counter() - t_sign, 2)
    say(f"(g) cold first polls after the restart: {len(members)} devices...")
    db = Database(database_url, 1)
    try:
        cpu0 = _cpu(pid)
        async with push_dispatch.backend_cpu(db) as backends:
            samples = await fleet.warm_up(members)
        cpu = _cpu(pid) - cpu0
    finally:
        await db.close()
    summary = samples.summary()
    summary["presigned_s"] = signed_s
    if samples.count:
        summary["server_cpu_us_per_poll"] = round(cpu * 1e6 / samples.count, 1)
        if not db.is_sqlite:
            summary["backend_cpu_us_per_poll"] = round(backends() * 1e6 / samples.count, 1)
    return summary
