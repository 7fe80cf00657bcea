"""The APNs contract fake (``mdm.devfakes.run_apns``) in a subprocess, for the benchmarks: started,
its connection details read from its first line, stopped and waited for on exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class FakeApnsError(Exception):
    pass


@dataclass
class StartedFake:
    process: asyncio.subprocess.Process
    info: dict[str, Any]  # url, ca_file, client_cert, client_key (the fake's first line)
    stderr: bytes = b""  # what it printed on stderr, once stopped


@contextlib.asynccontextmanager
async def started(cert_dir: Path | str, *extra_args: str) -> AsyncIterator[StartedFake]:
    fake = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm.devfakes.run_apns", "--cert-dir", str(cert_dir), "--quiet", *extra_args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    running: StartedFake | None = None
    try:
        assert fake.stdout is not None and fake.stderr is not None
        line = await fake.stdout.readline()
        if not line:
            problem = (await fake.stderr.read()).decode(errors="replace")[-2000:]
            raise FakeApnsError(f"the APNs fake did not start: {problem}")
        running = StartedFake(fake, json.loads(line))
        yield running
    finally:
        if fake.returncode is None:
            fake.terminate()
        try:
            async with asyncio.timeout(10):
                _, err = await fake.communicate()
            if running is not None:
                running.stderr = err
        except TimeoutError:
            fake.kill()
            await fake.wait()
