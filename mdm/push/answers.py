"""A batch's push answers sorted into what the dispatcher writes (``PushDispatcher._apply``): rows
done, rows pushed again and when, tokens refused, credentials refused. Pure: no database, so
that the apply's write transaction holds its lock for the statements alone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mdm.push.service_stats import service_name
from mdm.push.store_owed import DueRow
from mdm.push.types import Outcome, PushResult

log = logging.getLogger("mdm.push")


@dataclass
class SortedAnswers:
    # accepted pushes by (requests, attempts, result): one set-based pair of statements each (a
    # bulk batch is one group): rows of devices with commands to fetch stay as re-pushes
    sent: dict[tuple[int, int, str], list[int]] = field(default_factory=dict)
    finish: list[tuple[int, int]] = field(default_factory=list)  # (device id, requests): done
    # (device id, requests, due, last result, reason): tried again at ``due``
    later: list[tuple[int, int, datetime, str, str]] = field(default_factory=list)
    invalid: list[tuple[DueRow, PushResult]] = field(default_factory=list)  # tokens refused
    refused: dict[str, PushResult] = field(default_factory=dict)  # service -> its first CREDENTIALS


def result_text(result: PushResult) -> str:
    """The row's ``last_result``: the outcome and the service's reason."""
    return f"{result.outcome.value}:{result.reason}" if result.reason else result.outcome.value


def sort_answers(
    answered: Sequence[tuple[DueRow, PushResult]], now: datetime, backoff: Callable[[int], timedelta],
    held: timedelta,
) -> SortedAnswers:
    """``answered`` sorted (``backoff(attempts)``: the pause after a failed attempt; ``held``:
    the pause of rows waiting for credentials or an open circuit)."""
    out = SortedAnswers()
    for row, res in answered:
        if res.outcome is Outcome.SENT:
            why = f"sent:{res.reason}" if res.reason else "sent"
            out.sent.setdefault((row.requests, row.attempts, why), []).append(row.device_id)
            continue
        key = (row.device_id, row.requests)
        if res.outcome is Outcome.INVALID_TOKEN:
            out.invalid.append((row, res))
        elif res.outcome is Outcome.RETRY:
            delay = max(backoff(row.attempts), timedelta(seconds=res.retry_after or 0))
            out.later.append((*key, now + delay, result_text(res), row.reason))
        elif res.outcome is Outcome.CREDENTIALS:
            out.refused.setdefault(service_name(row.protocol), res)
            out.later.append((*key, now + held, result_text(res), row.reason))
        elif res.outcome is Outcome.REJECTED:
            log.warning("push: %s rejected the wake-up of device %d for good: %s (status %s)",
                        service_name(row.protocol), row.device_id, res.reason or "no reason", res.status)
            out.finish.append(key)
        else:  # UNAVAILABLE: the circuit is open or nothing is configured
            out.later.append((*key, now + held, result_text(res), row.reason))
    return out
