"""The platform-neutral binding seam (``mdm.core.identity``): the cache's per-device index,
generations and bound, and ``DeviceBindings`` in front of a platform's ``BindingSource``."""

from __future__ import annotations

from mdm.core.identity import BindingCache, BoundDevice, DeviceBindings


class Source:
    def __init__(self, rows: dict[bytes, BoundDevice]) -> None:
        self.rows = rows
        self.reads = 0

    async def __call__(self, fingerprint: bytes) -> BoundDevice | None:
        self.reads += 1
        return self.rows.get(fingerprint)


class Revoked:
    def __init__(self, *serials: str) -> None:
        self.serials = set(serials)

    def is_revoked(self, serial: str) -> bool:
        return serial in self.serials


def test_a_device_is_cached_under_one_fingerprint_and_dropped_by_id() -> None:
    cache = BindingCache(size=8, ttl=60)
    cache.put(b"old", 1, "udid-1", "ok")
    cache.put(b"new", 1, "udid-1", "ok")  # re-bound: the old fingerprint goes
    assert cache.get(b"old") is None and cache.get(b"new") is not None and len(cache) == 1
    cache.drop_device(1)
    assert cache.get(b"new") is None and not cache.holds(1)


def test_least_recently_used_goes_first_and_its_index_with_it() -> None:
    cache = BindingCache(size=2, ttl=60)
    cache.put(b"a", 1, "u1", "ok")
    cache.put(b"b", 2, "u2", "ok")
    assert cache.get(b"a") is not None  # b is now the least recently used
    cache.put(b"c", 3, "u3", "ok")
    assert cache.get(b"b") is None and not cache.holds(2)
    assert cache.holds(1) and cache.holds(3) and len(cache) == 2


def test_a_read_that_raced_with_a_drop_is_not_cached() -> None:
    cache = BindingCache(size=8, ttl=60)
    generation = cache.generation
    cache.drop_device(7)  # committed while the read was in flight
    binding = cache.put(b"fp", 7, "u7", "ok", generation)
    assert binding.device_id == 7 and cache.get(b"fp") is None
    cache.set_live(False)  # deaf to other replicas: nothing is cached
    cache.put(b"fp", 7, "u7", "ok", cache.generation)
    assert cache.get(b"fp") is None


async def test_device_bindings_read_once_then_from_the_cache() -> None:
    source = Source({b"fp": BoundDevice(5, "u5", "ok")})
    bindings = DeviceBindings(BindingCache(size=8, ttl=60), source, Revoked("dead"))
    first = await bindings.lookup(b"fp", "live")
    again = await bindings.lookup(b"fp", "live")
    assert first is not None and again is not None and first.device_id == again.device_id == 5
    assert source.reads == 1
    assert await bindings.lookup(b"fp", "dead") is None  # revoked: refused even when cached
    assert await bindings.lookup(b"unbound") is None and source.reads == 2


def test_a_drop_of_another_binding_does_not_keep_a_read_out() -> None:
    """In a check-in storm every Authenticate drops its own fingerprint: a read of one device
    made while others were dropped is still cached; one whose own fingerprint or device was
    dropped is not."""
    cache = BindingCache(size=8, ttl=60)
    generation = cache.generation
    cache.drop(b"other")
    cache.drop_device(99)
    cache.put(b"fp", 7, "u7", "ok", generation)
    assert cache.get(b"fp") is not None
    generation = cache.generation
    cache.drop(b"fp2")  # this identity checked out meanwhile
    cache.put(b"fp2", 8, "u8", "ok", generation)
    assert cache.get(b"fp2") is None
    assert cache.dropped_since(generation, b"fp2", 8) and not cache.dropped_since(generation, b"fp", 7)


def test_forgotten_drops_count_as_recent() -> None:
    from mdm.core import recent_drops

    cache = BindingCache(size=8, ttl=60)
    generation = cache.generation
    cache.drop(b"fp")
    for device_id in range(recent_drops.MAX_DROPS):  # b"fp"'s drop is forgotten
        cache.drop_device(1000 + device_id)
    cache.put(b"fp", 7, "u7", "ok", generation)
    assert cache.get(b"fp") is None
    later = cache.generation
    cache.put(b"fp", 7, "u7", "ok", later)
    assert cache.get(b"fp") is not None
    cache.clear()  # every read made before a clear is stale
    cache.put(b"fp", 7, "u7", "ok", later)
    assert cache.get(b"fp") is None
