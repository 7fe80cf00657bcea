"""File and prompt helpers of ``mdm certs`` (shared by the API and the local commands)."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from mdm.cli.common import CliError

MAX_INPUT_BYTES = 1024 * 1024


def read_input(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise CliError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{what} {path}: is a directory") from None
    except OSError as exc:
        raise CliError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_INPUT_BYTES:
        raise CliError(f"{what} {path}: larger than {MAX_INPUT_BYTES} bytes; not a certificate file")
    return data


def password(given: str | None, prompt: str, *, required: bool) -> str | None:
    if given is not None:
        return given
    if sys.stdin.isatty():
        return getpass.getpass(prompt) or None
    if required:
        raise CliError(f"{prompt.rstrip(': ')} required (--password)", exit_code=2)
    return None


def write_private(path: str, data: bytes) -> None:
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
