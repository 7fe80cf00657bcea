"""Free TCP ports for servers started in another process (the benchmarks' ``mdm serve``, the
contract fakes, and the test suite's own servers).

A port the kernel hands out for ``bind(("", 0))`` comes from the ephemeral range, where any
outgoing connection or ``bind(0)`` of a parallel process may take it again between our
``close()`` and the server's ``bind()``. Ports picked here lie below that range (the kernel never
hands them out on its own), and each pytest-xdist worker (``PYTEST_XDIST_WORKER``) draws from a
slice of its own, so only a foreign process that asks for a fixed port could collide.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Collection

_LOW, _HIGH = 20000, 32000  # below Linux's default ip_local_port_range (32768-60999)
_SLICES = 8


def worker_slice() -> range:
    """The ports this pytest-xdist worker (or a process outside a test run) draws from."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % _SLICES if worker.isdigit() else 0
    width = (_HIGH - _LOW) // _SLICES
    return range(_LOW + index * width, _LOW + (index + 1) * width)


def bindable(port: int) -> bool:
    """Nobody listens on ``port``, on any address or on the loopback."""
    for host in ("0.0.0.0", "127.0.0.1"):  # noqa: S104 - a probe, closed at once
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_ports(n: int, avoid: Collection[int] = ()) -> list[int]:
    """``n`` distinct ports nobody listens on now, outside the ephemeral range, none of ``avoid``
    (ports picked earlier for a server that does not listen yet)."""
    candidates = [p for p in worker_slice() if p not in avoid]
    random.shuffle(candidates)
    ports = [p for p in candidates[: n * 20] if bindable(p)][:n]
    if len(ports) < n:
        raise RuntimeError(f"no {n} free ports in {worker_slice()}")
    return ports


def free_port() -> int:
    (port,) = free_ports(1)
    return port
