"""The sync's process-local state, alone: the spacing that answers 429, the queue-empty hint and
its generation, the long-poll slots (bounded, one per device, freed on exit)."""

from __future__ import annotations

import asyncio

import pytest

from mdm.kes.longpoll import LongPolls, wait
from mdm.kes.sync_state import QueueHint, Spacing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_spacing_refuses_until_the_interval_has_passed_and_records_only_accepted_syncs() -> None:
    clock = Clock()
    spacing = Spacing(16, timer=clock)
    assert spacing.check(1, 2.0) == 0.0
    clock.now += 0.5
    assert spacing.check(1, 2.0) == pytest.approx(1.5)
    clock.now += 1.0  # refused syncs do not push the window
    assert spacing.check(1, 2.0) == pytest.approx(0.5)
    assert spacing.check(2, 2.0) == 0.0  # another device
    clock.now += 0.6
    assert spacing.check(1, 2.0) == 0.0
    assert spacing.check(1, 0.0) == 0.0  # spacing off


def test_the_hint_forgets_on_invalidate_and_ignores_a_look_that_raced_with_an_enqueue() -> None:
    clock = Clock()
    hint = QueueHint(30.0, 16, timer=clock)
    generation = hint.generation
    hint.mark_empty(1, generation)
    assert hint.known_empty(1)
    hint.invalidate(1)
    assert not hint.known_empty(1)
    stale = hint.generation
    hint.invalidate(1)  # an enqueue for device 1 while its look was running
    hint.mark_empty(1, stale)
    assert not hint.known_empty(1)
    hint.invalidate(2)  # one for another device does not spoil device 1's look
    hint.mark_empty(1, stale + 1)
    assert hint.known_empty(1)
    clock.now += 31
    assert not hint.known_empty(1)  # expired


@pytest.mark.asyncio
async def test_long_poll_slots_are_bounded_one_per_device_and_freed() -> None:
    polls = LongPolls(2)
    async with polls.slot(1) as first:
        assert first is not None and polls.waiting(1)
        async with polls.slot(2) as second, polls.slot(3) as third:
            assert second is not None and third is None  # the limit
        async with polls.slot(1) as again:  # a newer long poll of device 1 ends the older
            assert again is not None and first.is_set()
        assert not polls.waiting(1)
    assert len(polls) == 0
    async with polls.slot(5) as waiter:
        assert waiter is not None
        asyncio.get_running_loop().call_later(0.05, polls.wake, 5)
        assert await wait(waiter, 5)
    async with polls.slot(6) as waiter:
        assert waiter is not None and not await wait(waiter, 0.05)
    assert not polls.wake(6)
