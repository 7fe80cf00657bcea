"""The load tool's own garbage collector, settled as the server's (``mdm.server.runtime``) for
a measured phase: what preparation built (2,000 simulated devices with their keys, certificates
and connections) frozen out of the collector's reach, young collections rare. With the defaults
the bench ran a full collection of 30-68 ms every few seconds, scanning those objects; each
one held every flow in flight, and the pause was counted in the latencies it reported as the
server's. The caller's settings come back after (the bench also runs in tests' processes)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from mdm.server.runtime import settle_gc


@contextmanager
def settled() -> Iterator[None]:
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    settle_gc()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if not frozen:  # (what the caller froze itself stays frozen)
            gc.unfreeze()
