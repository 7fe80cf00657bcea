"""Signing of configuration profiles sent by ``InstallConfProf``: the ``ios`` slot signer, re-read
when its files change (``mdm certs set``, reload), and the cache of signed profiles (a profile
sent to the whole fleet is signed once, not once per device)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from cachetools import LRUCache
from cryptography.hazmat.primitives import hashes

from mdm.ios.signing import SIGNING_SLOT, ProfileSigner, SigningError, sign_profile
from mdm.pki.slots import slot_paths

SIGNED_CACHE_SIZE = 64


class SlotSigner:
    """The ``ios`` slot signer, re-read when its files change (``mdm certs set``, reload)."""

    def __init__(self, certs_dir: Path) -> None:
        self.certs_dir = certs_dir
        self._stamp: tuple[int, int] | None = None
        self._signer: ProfileSigner | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ProfileSigner:
        cert_path, key_path = slot_paths(self.certs_dir, SIGNING_SLOT)
        try:
            stamp = (cert_path.stat().st_mtime_ns, key_path.stat().st_mtime_ns)
        except FileNotFoundError:
            raise SigningError(f"the '{SIGNING_SLOT}' signing certificate or key is missing") from None
        with self._lock:
            if self._signer is None or stamp != self._stamp:
                self._signer = ProfileSigner.from_slot(self.certs_dir, SIGNING_SLOT)
                self._stamp = stamp
            return self._signer


class SignedProfiles:
    """Signed bytes by (profile digest, signer certificate), least recently used evicted first.
    Thread-safe: profiles are signed from worker threads as well as the event loop."""

    def __init__(self, size: int = SIGNED_CACHE_SIZE) -> None:
        self._cache: LRUCache[tuple[bytes, bytes], bytes] = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def sign(self, data: bytes, signer: ProfileSigner) -> bytes:
        key = (hashlib.sha256(data).digest(), signer.certificate.fingerprint(hashes.SHA256()))
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        signed = sign_profile(data, signer)
        with self._lock:
            self._cache[key] = signed
        return signed

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)
