"""``RecentDrops``: a reader is kept out exactly when its key was (or may have been) dropped."""

from __future__ import annotations

from mdm.core.recent_drops import RecentDrops


def test_a_drop_keeps_out_only_readers_of_its_key_begun_before_it() -> None:
    drops = RecentDrops(size=8)
    before = drops.generation
    drops.drop("a")
    assert drops.since(before, "a")
    assert not drops.since(before, "b")
    assert not drops.since(drops.generation, "a")  # a reader begun after the drop


def test_a_redropped_key_moves_to_the_newest_place() -> None:
    drops = RecentDrops(size=3)
    drops.drop("a")
    drops.drop("b")
    drops.drop("c")
    reader = drops.generation
    drops.drop("a")  # now the newest: "b" is the oldest and goes first
    drops.drop("d")
    # "b" forgotten: any reader begun before its drop is kept out, whatever its key.
    assert drops.since(1, "zzz")
    assert drops.since(reader, "a") and drops.since(reader, "d")
    assert not drops.since(reader, "c")  # "c" still remembered, dropped before the reader began


def test_memory_is_bounded_and_forgotten_drops_count_as_recent() -> None:
    drops = RecentDrops(size=100)
    for key in range(10_000):
        drops.drop(key)
    assert len(drops._drops) == 100
    old_reader = 9_000  # began before drops now forgotten
    assert drops.since(old_reader, "never-dropped")
    assert not drops.since(drops.generation, 5)
    assert drops.since(drops.generation - 1, 9_999)


def test_clear_keeps_out_every_reader_begun_before() -> None:
    drops = RecentDrops(size=8)
    reader = drops.generation
    drops.clear()
    assert drops.since(reader, "anything")
    assert not drops.since(drops.generation, "anything")
