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
