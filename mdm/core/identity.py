"""Device-identity binding, platform-neutral: which enrolled device a client certificate is bound
to (certificate fingerprint -> device), checked on every request of a device listener.

A platform (iOS now, the Android listener next) supplies

- a ``BindingSource``: how to read the binding of a fingerprint from its own table (for iOS the
  ``ios_devices`` look-up in ``mdm.ios.store``), and
- optionally a ``RevocationCheck`` consulted on every look-up, cached or not. Listeners whose
  certificates are verified by ``pki``'s ``ClientCertVerifier`` (which checks revocation on every
  use, before the binding is asked for) need none.

``DeviceBindings`` caches what the source returns in a ``BindingCache``; ``identity_invalidation``
drops a device's cached binding at commit when its device or binding row changes, in this process
and (PostgreSQL NOTIFY, ``identity_notify``) on every other replica.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import NamedTuple
from typing import Protocol as TypingProtocol

from cachetools import LRUCache

from mdm.core.recent_drops import RecentDrops


@dataclass(frozen=True, slots=True)
class Binding:
    device_id: int
    identifier: str
    status: str
    expires: float


class BoundDevice(NamedTuple):
    """What a ``BindingSource`` reads: the device a fingerprint is bound to."""

    id: int
    identifier: str
    status: str


class BindingSource(TypingProtocol):
    """Reads the binding of a certificate fingerprint from the platform's table (None: unbound)."""

    async def __call__(self, fingerprint: bytes) -> BoundDevice | None: ...


class RevocationCheck(TypingProtocol):
    """Whether the certificate with this serial (hex) is revoked (or otherwise no longer valid)."""

    def is_revoked(self, serial: str) -> bool: ...


class BindingCache:
    """fingerprint -> Binding for ``ttl`` seconds, bounded (least recently used goes first).

    Also indexed by device id, so that a device whose binding ended (deleted, checked out,
    removed, re-bound to another identity) is dropped at once: ``drop_device`` is called at commit
    in this process and on a NOTIFY from other replicas (``identity_invalidation``,
    ``identity_notify``). The TTL only bounds what a lost notification could leave behind.
    ``generation`` moves on every drop, and each drop is remembered with its generation under the
    fingerprint or device id it dropped: a look-up that read the database before a drop of its
    fingerprint or device does not cache what it read. (A drop of another device does not keep
    it out: in a check-in storm every Authenticate drops its own fingerprint, and with one
    generation for all nearly every binding read or made while others committed went uncached.)
    """

    def __init__(self, size: int, ttl: float) -> None:
        self._entries: LRUCache[bytes, Binding] = LRUCache(maxsize=size)
        # device id -> the fingerprint cached for it (one binding per device in the database).
        self._device: dict[int, bytes] = {}
        self.size = size
        self.ttl = ttl
        # Drops per fingerprint (bytes) and device id (int), with their generations.
        self._drops = RecentDrops()
        # False while the replica cannot hear other replicas' drops (PostgreSQL LISTEN down):
        # nothing is cached then, every request reads its binding.
        self.live = True

    def get(self, fingerprint: bytes) -> Binding | None:
        hit = self._entries.get(fingerprint)
        if hit is None:
            return None
        if hit.expires < time.monotonic():
            self._remove(fingerprint)
            return None
        return hit

    def put(
        self, fingerprint: bytes, device_id: int, identifier: str, status: str, generation: int | None = None
    ) -> Binding:
        """Cache (unless a drop happened since ``generation`` was read) and return the binding."""
        # Jittered (between 3/4 of the ttl and the ttl): bindings cached in one pass (a warm-up,
        # a storm) are read again spread over time, not all by the same second's polls.
        expires = time.monotonic() + self.ttl * (1.0 - 0.25 * random.random())  # noqa: S311
        binding = Binding(device_id, identifier, status, expires)
        if (
            self.ttl <= 0
            or not self.live
            or (generation is not None and self.dropped_since(generation, fingerprint, device_id))
        ):
            return binding
        self._remove(fingerprint)
        previous = self._device.get(device_id)
        if previous is not None:
            self._remove(previous)  # the device is bound to this fingerprint now, not that one
        if len(self._entries) >= self.size:
            oldest, evicted = self._entries.popitem()  # the least recently used
            if self._device.get(evicted.device_id) == oldest:
                del self._device[evicted.device_id]
        self._entries[fingerprint] = binding
        self._device[device_id] = fingerprint
        return binding

    def _remove(self, fingerprint: bytes) -> None:
        binding = self._entries.pop(fingerprint, None)
        if binding is not None and self._device.get(binding.device_id) == fingerprint:
            del self._device[binding.device_id]

    @property
    def generation(self) -> int:
        """Read before a look-up whose result is then given to ``put``."""
        return self._drops.generation

    def dropped_since(self, generation: int, fingerprint: bytes, device_id: int) -> bool:
        """Whether ``fingerprint`` or ``device_id`` was dropped after ``generation`` was read
        (or may have been: one of the drops no longer remembered)."""
        return self._drops.since(generation, fingerprint, device_id)

    def _dropped(self, key: bytes | int) -> None:
        self._drops.drop(key)

    def drop(self, fingerprint: bytes | None) -> None:
        if fingerprint is not None:
            self._dropped(fingerprint)
            self._remove(fingerprint)

    def drop_device(self, device_id: int) -> None:
        """The device's binding ended or changed: forget whatever is cached for it."""
        self._dropped(device_id)
        fingerprint = self._device.pop(device_id, None)
        if fingerprint is not None:
            self._entries.pop(fingerprint, None)

    def holds(self, device_id: int) -> bool:
        """Whether a binding of the device is cached (what a replica's drop is seen by)."""
        return device_id in self._device

    def clear(self) -> None:
        self._drops.clear()  # every read before now is as if dropped
        self._entries.clear()
        self._device.clear()

    def set_live(self, live: bool) -> None:
        """Caching on (drops from other replicas are heard) or off (they may be missed)."""
        self.live = live
        self.clear()

    def __len__(self) -> int:
        return len(self._entries)


class DeviceBindings:
    """The binding look-up of one platform: the cache in front of its ``BindingSource``."""

    def __init__(
        self, cache: BindingCache, source: BindingSource, revocation: RevocationCheck | None = None
    ) -> None:
        self.cache = cache
        self.source = source
        self.revocation = revocation

    async def lookup(self, fingerprint: bytes, serial: str | None = None) -> Binding | None:
        """The device ``fingerprint`` is bound to, or None (unbound, or ``serial`` revoked)."""
        if self.revocation is not None and serial is not None and self.revocation.is_revoked(serial):
            return None
        binding = self.cache.get(fingerprint)
        if binding is not None:
            return binding
        generation = self.cache.generation
        row = await self.source(fingerprint)
        if row is None:
            return None
        return self.cache.put(fingerprint, row.id, row.identifier, row.status, generation)
