"""The benchmarks' servers listen on ports picked below the kernel's ephemeral range.

CI saw ``mdm bench outbox`` fail with "mdm serve exited with 1" while other xdist workers ran:
a port the kernel handed out for ``bind(0)`` and ``mdm init`` wrote into the configuration was
free again until ``mdm serve`` bound it, and any outgoing connection or ``bind(0)`` of a parallel
test may take it in between. Ports below ``ip_local_port_range`` are never handed out that way.
"""

from __future__ import annotations

from pathlib import Path

from mdm.bench import local, ports


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_every_bench_listener_port_lies_below_the_ephemeral_range(tmp_path: Path) -> None:
    config = local.prepare(tmp_path / "bench")
    listeners = local.listener_ports(config)
    assert len(listeners) == 5
    picked = [*listeners, *ports.free_ports(3, avoid=listeners)]
    assert len(set(picked)) == len(picked)
    assert all(1024 < port < _ephemeral_low() for port in picked), picked


def test_ports_asked_for_together_are_distinct_and_bindable() -> None:
    picked = ports.free_ports(12)
    assert len(set(picked)) == 12
    assert all(ports.bindable(port) for port in picked)


def test_a_server_that_dies_at_start_names_its_last_log_lines(tmp_path: Path) -> None:
    config = local.prepare(tmp_path / "bench")
    (config.data_path / local.SERVER_LOG).write_text("".join(f"line {i}\n" for i in range(100)))
    message = local.exit_message(config.data_path / local.SERVER_LOG, 1)
    assert "exited with 1" in message and "line 99" in message and "line 10\n" not in message


def test_ports_picked_for_a_server_not_listening_yet_are_not_picked_again() -> None:
    first = ports.free_ports(5)
    # Without ``avoid`` the same ports are still bindable and could come back (CI: the outbox
    # bench's receiver could take one of its server's ports, about one run in 150).
    for _ in range(50):
        assert not set(ports.free_ports(20, avoid=first)) & set(first)
