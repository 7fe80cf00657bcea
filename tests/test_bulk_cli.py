"""The bulk progress bar: one line redrawn in place on a terminal, a line every few seconds
otherwise, always the final line."""

from __future__ import annotations

import io

from mdm.cli.bulk_progress import Progress, progress_line

OP = {"id": 7, "type": "Block", "targeted": 200, "queued": 90, "skipped": 10, "pending": 60,
      "delivered": 30, "completed": 25, "failed": 5}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_line_counts_queued_or_delivered() -> None:
    line = progress_line(OP)
    assert line.startswith("bulk 7 Block [###############...............]  50% of 200")
    assert line.endswith("queued 90, skipped 10")
    assert progress_line(OP, delivery=True).endswith("delivered 30, completed 25, failed 5, pending 60")
    assert " 65% of 200" in progress_line(OP, delivery=True)


def test_terminal_redraws_one_line() -> None:
    out = Tty()
    p = Progress(out)
    p.show("a")
    p.show("b")
    p.show("c", final=True)
    p.close()
    assert out.getvalue() == "\r\x1b[Ka\r\x1b[Kb\r\x1b[Kc\n"


def test_plain_stream_writes_a_line_every_few_seconds() -> None:
    now = [0.0]
    out = io.StringIO()
    p = Progress(out, clock=lambda: now[0])
    for t, text in ((0.0, "a"), (1.0, "b"), (5.5, "c"), (6.0, "d")):
        now[0] = t
        p.show(text)
    p.show("end", final=True)
    p.close()
    assert out.getvalue().splitlines() == ["a", "c", "end"]
