"""The recall at the end of ``mdm bench fleet``: what the silent devices did not fetch is taken
back, so that the next run on the same data directory starts from the same state.

``DELETE /api/v1/bulk/{id}`` recalls everything before it answers (about 990,000 commands at
10^6 devices), and the server is busy meanwhile: an answer, or a status read, may take longer than
the client's per-request timeout. The server goes on recalling when the client gives up (the
operation is ``recalling`` from the moment the DELETE arrived), so a timeout here only means
"ask again later": the DELETE is sent until the server took it, then the status is read until
the recall ended, transient errors retried, all within the recall's own deadline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from mdm.bench.fleet_report import Report, guarded
from mdm.bench.phases import Admin
from mdm.bench.progress import Say

ENDED = ("recalled", "failed")
NOT_RECALLING = ("queuing", "queued")
# Transient while the server is busy: the request is asked again.
TRANSIENT = (TimeoutError, aiohttp.ClientError)


# Under the data directory: the bulk operation of a run not recalled yet (the run stopped first).
PENDING_BULK = "bench/fleet-bulk-pending"


class RecallError(Exception):
    pass


async def recall_at_the_end(admin: Admin, report: Report, bulk_id: int, *, pending: Path, deadline_s: float,
                            say: Say) -> None:
    """Recall what the silent devices did not fetch; the pending-bulk file is removed once the
    recall ended (else the next run recalls it first)."""
    say(f"recalling what the silent devices did not fetch (up to {deadline_s:.0f}s)...")
    async with guarded(report, "recall", say):
        t0 = time.perf_counter()
        status = await recall(admin, bulk_id, deadline_s=deadline_s)
        report.recall = {k: status.get(k) for k in ("state", "recalled", "queued", "completed")}
        report.recall["seconds"] = round(time.perf_counter() - t0, 1)
        await asyncio.to_thread(pending.unlink, missing_ok=True)


def pending_path(data_path: Path) -> Path:
    """The file under a data directory that holds a run's bulk operation until it is recalled."""
    return data_path / PENDING_BULK


def pending_bulk(pending: Path) -> int | None:
    """The bulk operation a run recorded in ``pending`` (``pending_path``) before it stopped or
    its phase failed (still to be recalled)."""
    return int(pending.read_text().strip()) if pending.exists() else None


async def recall_left_over(admin: Admin, pending: Path, say: Say, deadline_s: float) -> None:
    """A run stopped before its recall left its bulk command queued on the silent devices: recall
    it first, or this run's command would be skipped as a duplicate on all of them."""
    bulk_id = pending_bulk(pending)
    if bulk_id is None:
        return
    say(f"recalling bulk operation {bulk_id} left by an interrupted run...")
    try:
        await recall(admin, bulk_id, deadline_s=deadline_s)
    except (RecallError, *TRANSIENT) as exc:
        say(f"could not recall bulk operation {bulk_id}: {exc}")
    await asyncio.to_thread(pending.unlink, missing_ok=True)


async def recall(admin: Admin, bulk_id: int, *, deadline_s: float, interval_s: float = 0.5) -> dict[str, Any]:
    """Recall the operation and wait until it ended; its final status. ``RecallError`` when the
    server refuses, or the recall has not ended after ``deadline_s`` seconds."""
    deadline = time.monotonic() + deadline_s
    send = True  # the DELETE is (re)sent only while the operation is not recalling yet
    status: dict[str, Any] = {}
    last_error = ""
    while time.monotonic() < deadline:
        if send:
            send = False
            try:
                status = await _delete(admin, bulk_id)
            except TRANSIENT as exc:
                last_error = _name(exc)  # maybe taken all the same: the status says
        try:
            status = await bulk_status(admin, bulk_id)
        except TRANSIENT as exc:
            last_error = _name(exc)
            await _pause(interval_s, deadline)
            continue
        state = status.get("state")
        if state in ENDED:
            return status
        send = state in NOT_RECALLING  # the DELETE never arrived
        await _pause(interval_s, deadline)
    state, recalled = status.get("state", "unknown"), status.get("recalled", "?")
    raise RecallError(
        f"bulk operation {bulk_id} not recalled after {deadline_s:.0f}s (state {state}, recalled {recalled})"
        + (f"; last client error {last_error}" if last_error else "")
    )


async def bulk_status(admin: Admin, bulk_id: int) -> dict[str, Any]:
    async with admin.session.get(f"{admin.base}/bulk/{bulk_id}") as response:
        if response.status != 200:
            text = (await response.text())[:300]
            raise RecallError(f"GET /bulk/{bulk_id} answered {response.status}: {text}")
        return dict(await response.json())


async def _delete(admin: Admin, bulk_id: int) -> dict[str, Any]:
    async with admin.session.delete(f"{admin.base}/bulk/{bulk_id}") as response:
        if response.status >= 500:  # the server had a problem with this request: ask again
            raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
        if response.status not in (200, 202, 204):
            text = (await response.text())[:300]
            raise RecallError(f"DELETE /bulk/{bulk_id} answered {response.status}: {text}")
        return dict(await response.json()) if response.status != 204 else {}


async def _pause(seconds: float, deadline: float) -> None:
    await asyncio.sleep(max(0.0, min(seconds, deadline - time.monotonic())))


def _name(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
