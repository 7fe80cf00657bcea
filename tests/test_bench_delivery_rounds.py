"""Phase (b2) of ``mdm bench ios`` runs in rounds for a duration: each round queues (untimed, its
CPU not counted) and then delivers (timed, CPU counted), with the same devices, until the timed
part has used the duration; the report gives the totals and the per-round spread."""

from __future__ import annotations

from mdm.bench.delivery import run_rounds


class FakeServer:
    """A clock and a CPU counter that only the calls below advance: queueing costs 5 s of clock
    and 9 s of CPU (neither may be counted), a delivery of 10 round trips 1 s and 2, 4, 6 … ms
    of CPU per round trip."""

    def __init__(self) -> None:
        self.now = 0.0
        self.cpu_s = 0.0
        self.queued = 0
        self.delivered = 0
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now

    def cpu(self) -> float:
        return self.cpu_s

    async def queue(self) -> None:
        self.calls.append("queue")
        self.now += 5.0
        self.cpu_s += 9.0
        self.queued += 10

    async def deliver(self) -> int:
        self.calls.append("deliver")
        assert self.queued - self.delivered == 10  # each round delivers what its queue put
        self.now += 1.0
        self.cpu_s += 10 * (len(self.calls) // 2) * 0.002
        self.delivered += 10
        return 10


async def test_rounds_run_until_the_timed_part_used_the_duration() -> None:
    server = FakeServer()
    done = await run_rounds(2.5, server.queue, server.deliver, server.cpu, clock=server.clock)
    # 1 s of timed delivery per round: 3 rounds reach 2.5 s; queueing's 5 s per round not counted.
    assert done.rounds == 3 and server.calls == ["queue", "deliver"] * 3
    assert done.round_trips == 30 == server.delivered and done.seconds == 3.0
    summary = done.summary()
    assert summary["rounds"] == 3 and summary["timed_s"] == 3.0
    # CPU of the deliveries only (2, 4, 6 ms per round trip), none of the queueing's 27 s.
    assert summary["server_cpu_ms_per_round_trip"] == 4.0
    assert summary["server_cpu_ms_per_round_trip_rounds"] == {"min": 2.0, "median": 4.0, "max": 6.0}


async def test_a_short_duration_still_runs_one_round() -> None:
    server = FakeServer()
    done = await run_rounds(0.0, server.queue, server.deliver, server.cpu, clock=server.clock)
    assert (done.rounds, done.round_trips) == (1, 10)


async def test_a_round_that_delivers_nothing_ends_the_phase() -> None:
    server = FakeServer()

    async def nothing() -> int:
        server.now += 1.0
        return 0

    done = await run_rounds(60.0, server.queue, nothing, server.cpu, clock=server.clock)
    assert (done.rounds, done.round_trips) == (1, 0)
    assert "server_cpu_ms_per_round_trip" not in done.summary()


async def test_without_the_servers_cpu_no_cpu_figures() -> None:
    server = FakeServer()
    done = await run_rounds(1.5, server.queue, server.deliver, lambda: None, clock=server.clock)
    summary = done.summary()
    assert summary["rounds"] == 2 and done.round_trips == 20
    assert "server_cpu_ms_per_round_trip" not in summary
    assert "server_cpu_ms_per_round_trip_rounds" not in summary
