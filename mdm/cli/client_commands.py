"""Commands that talk to a running server through the admin API (filled in by the CLI work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    return None
