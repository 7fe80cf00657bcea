"""Free TCP ports for servers a test starts in another process: the benchmarks' own picker
(below the ephemeral range, a slice per xdist worker; see ``mdm.bench.ports``)."""

from __future__ import annotations

from mdm.bench.ports import bindable, free_port, free_ports, worker_slice

__all__ = ["bindable", "free_port", "free_ports", "worker_slice"]
