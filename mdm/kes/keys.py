"""Typed keys of the KES services other modules of the package (and the bench) read."""

from __future__ import annotations

from mdm.kes.peer import PeerResolver
from mdm.server.context import ServiceKey

# Set by ``plugin`` at start-up; the sync handlers authenticate devices with it.
PEERS = ServiceKey("kes.peers", PeerResolver)
