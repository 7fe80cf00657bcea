"""The ``mdm`` command run as a subprocess against a test's data directory, with the developer's
own ``MDM_*`` environment left out (so that the test's configuration is the one used)."""

from __future__ import annotations

import asyncio
import os
import sys

from mdm.config import Config


async def mdm_cli(
    config: Config, *args: str, env_extra: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``mdm ARGS --data-dir DATA`` and answer (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDM_")} | (env_extra or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mdm", *args, "--data-dir", str(config.data_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
