"""Running a benchmark from the CLI: on uvloop, progress on stderr, SIGTERM as a clean stop."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from mdm.cli.common import CliError

T = TypeVar("T")


def drive(bench: Callable[[Callable[[str], None]], Coroutine[Any, Any, T]]) -> T:
    """Run a benchmark on uvloop when installed (the server's default), its progress lines on
    stderr; SIGTERM cancels it (its clean-up runs) and exits 143."""

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        result: T = asyncio.run(_cancel_on_sigterm(bench(say)))
    except asyncio.CancelledError:
        raise CliError("stopped by SIGTERM", exit_code=143) from None
    return result


async def _cancel_on_sigterm(run: Any) -> Any:
    """SIGTERM cancels the run like Ctrl-C does, so that it stops its server and removes its
    temporary data directory before exiting."""
    task = asyncio.ensure_future(run)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
