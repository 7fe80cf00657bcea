"""The queue-empty hint forgets an "empty" only for the device something was queued for: an
enqueue (or an Authenticate's invalidation) for one device does not keep every other device's
concurrent idle poll from recording its empty queue; a forgotten invalidation counts as recent."""

from __future__ import annotations

from mdm.core.queue_hint import QueueHint
from mdm.core.recent_drops import MAX_DROPS


def test_an_enqueue_for_another_device_does_not_spoil_an_empty_queue_seen_meanwhile() -> None:
    hint = QueueHint(ttl=60.0, size=1000)
    generation = hint.generation  # device 1's poll reads before its query
    hint.invalidate(2)  # something queued for device 2 meanwhile
    hint.mark_empty(1, generation)
    assert hint.known_empty(1)


def test_an_enqueue_for_the_same_device_keeps_the_stale_empty_out() -> None:
    hint = QueueHint(ttl=60.0, size=1000)
    generation = hint.generation
    hint.invalidate(1)
    hint.mark_empty(1, generation)
    assert not hint.known_empty(1)
    hint.mark_empty(1, hint.generation)  # a query begun after the enqueue may record it
    assert hint.known_empty(1)


def test_an_invalidation_no_longer_remembered_counts_as_recent() -> None:
    hint = QueueHint(ttl=60.0, size=10 * MAX_DROPS)
    generation = hint.generation
    hint.invalidate(1)
    for device_id in range(2, MAX_DROPS + 3):  # device 1's invalidation is forgotten
        hint.invalidate(device_id)
    hint.mark_empty(1, generation)
    assert not hint.known_empty(1)


def test_clear_keeps_out_every_read_begun_before_it() -> None:
    hint = QueueHint(ttl=60.0, size=1000)
    generation = hint.generation
    hint.clear()
    hint.mark_empty(5, generation)
    assert not hint.known_empty(5)


def test_the_hint_holds_at_most_its_size_forgetting_the_oldest_mark() -> None:
    hint = QueueHint(ttl=100, size=3, timer=lambda: 0.0)
    for device_id in (1, 2, 3):
        hint.mark_empty(device_id, hint.generation)
    hint.mark_empty(1, hint.generation)  # marked again: the most recent now
    hint.mark_empty(4, hint.generation)
    assert len(hint) == 3
    assert [d for d in (1, 2, 3, 4) if hint.known_empty(d)] == [1, 3, 4]


def test_an_expired_empty_is_forgotten_and_a_new_mark_holds_again() -> None:
    now = [0.0]
    hint = QueueHint(ttl=10, size=100, timer=lambda: now[0])
    hint.mark_empty(1, hint.generation)
    hint.mark_empty(2, hint.generation)
    now[0] = 10.1
    assert not hint.known_empty(1)
    hint.mark_empty(3, hint.generation)  # the oldest, 2, expired: dropped at this mark
    assert len(hint) == 1
    hint.mark_empty(1, hint.generation)
    assert hint.known_empty(1)
    now[0] = 20.2
    assert not hint.known_empty(1)
