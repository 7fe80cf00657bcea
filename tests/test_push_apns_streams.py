"""The APNs client's streams against the contract fake: deadlines (one sweep per connection), a
GOAWAY while pushes are in flight, more pushes than the gateway's stream limit; the push body."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from apns_support import apns_env, target

from mdm.push.apns import ApnsClient
from mdm.push.apns.client import _json_string
from mdm.push.types import Outcome, PushResult


async def _timed(client: ApnsClient) -> tuple[PushResult, float]:
    began = time.monotonic()
    result = await client.send(target())
    return result, time.monotonic() - began


async def test_unanswered_pushes_time_out_each_at_its_own_deadline(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client(connections=1, timeout_seconds=0.4)
        try:
            assert (await client.send(target())).outcome is Outcome.SENT
            env.fake.stall(0.3)  # requests arriving in the next 0.3 s are never answered
            first = asyncio.ensure_future(_timed(client))
            await asyncio.sleep(0.2)
            second = asyncio.ensure_future(_timed(client))
            (a, a_took), (b, b_took) = await asyncio.gather(first, second)
            assert a.outcome is Outcome.RETRY and a.reason == "timeout: no answer within 0.4s"
            assert b.outcome is Outcome.RETRY and b.reason.startswith("timeout")
            # each at its deadline: not before it, and the second not swept early with the first
            assert 0.39 <= a_took < 1.0 and 0.39 <= b_took < 1.0, (a_took, b_took)
            await asyncio.sleep(0.1)
            assert (await client.send(target())).outcome is Outcome.SENT  # same connection
        finally:
            await client.close()
        assert env.fake.connections_seen == 1 and env.fake.count == 2


async def test_timed_out_streams_are_freed_for_waiting_pushes(tmp_path: Path) -> None:
    async with apns_env(tmp_path, raise_streams_to=3) as env:
        client = env.client(connections=1, timeout_seconds=0.4)
        try:
            assert (await client.send(target())).outcome is Outcome.SENT  # the limit rises to 3
            env.fake.stall(0.1)
            stuck = [asyncio.ensure_future(client.send(target())) for _ in range(3)]
            await asyncio.sleep(0.2)  # every stream taken, unanswered; the stall is over
            waiting = asyncio.ensure_future(_timed(client))
            timed_out = await asyncio.gather(*stuck)
            late, took = await waiting
        finally:
            await client.close()
        assert [r.outcome for r in timed_out] == [Outcome.RETRY] * 3
        assert all(r.reason.startswith("timeout: no answer") for r in timed_out)
        # it waited for a stream (the three timed out ~0.2 s after it came) and then went through
        assert late.outcome is Outcome.SENT and 0.1 < took < 0.4, (late, took)
        assert env.fake.refused_streams == 0 and env.fake.connections_seen == 1


async def test_more_pushes_than_streams_wait_for_a_free_one(tmp_path: Path) -> None:
    async with apns_env(tmp_path, raise_streams_to=4) as env:
        client = env.client(connections=1)
        try:
            results = await asyncio.gather(*(client.send(target()) for _ in range(60)))
        finally:
            await client.close()
        assert all(r.outcome is Outcome.SENT for r in results), results
        assert env.fake.max_concurrent == 4  # used to the limit, never beyond it
        assert env.fake.refused_streams == 0 and env.fake.count == 60 and env.fake.connections_seen == 1


async def test_goaway_with_pushes_in_flight_sends_them_again_elsewhere(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        client = env.client(connections=1, timeout_seconds=5.0)
        try:
            assert (await client.send(target())).outcome is Outcome.SENT  # stream 1, answered
            env.fake.stall(0.1)
            in_flight = [asyncio.ensure_future(client.send(target())) for _ in range(5)]
            await asyncio.sleep(0.2)  # five streams open, unanswered; the stall is over
            env.fake.goaway("Shutdown")  # at the next request: GOAWAY, last stream 1
            results = await asyncio.gather(*in_flight, client.send(target()))
        finally:
            await client.close()
        # none of them was processed (above the last stream id): each is sent again on a new
        # connection and accepted there, long before its 5 s deadline
        assert all(r.outcome is Outcome.SENT for r in results), results
        assert env.fake.connections_seen == 2 and env.fake.count == 7


@pytest.mark.parametrize("magic", ["6F6E2D8A-3B6C-4D4A-9E8B-2C1D0F1E2A3B", 'a"b', "a\\b", "é", "\x7f",
                                   "\x01x", "", "tab\t", "\u2028"])
def test_the_push_magic_is_a_json_string_whatever_it_holds(magic: str) -> None:
    body = b'{"mdm":"' + _json_string(magic) + b'"}'
    assert json.loads(body) == {"mdm": magic}
    assert _json_string(magic) == json.dumps(magic)[1:-1].encode()  # as before: the same bytes
