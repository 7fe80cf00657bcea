"""Placeholder until the EAS work lands: registers nothing yet."""

from __future__ import annotations

from typing import Any


def register(eas: Any) -> None:
    """Add this module's mdm eas actions to the group's subparsers."""
