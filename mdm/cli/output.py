"""Rendering for the CLI: aligned plain-text tables for people, JSON for scripts.

The tables are hand-written (a few lines) rather than a dependency: they only need to align
columns and stay readable when piped to grep/less.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

Column = tuple[str, Callable[[dict[str, Any]], Any]]
MAX_CELL = 60


def emit_json(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str), file=out or sys.stdout, flush=True)


def emit_json_line(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, separators=(",", ":"), default=str), file=out or sys.stdout, flush=True)


def when(value: Any) -> str:
    """ISO timestamp from the API -> ``2024-05-01 12:00:03Z`` (UTC); empty stays empty."""
    if not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%SZ")


def cell(value: Any, limit: int = MAX_CELL) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        text = " ".join(f"{k}={_scalar(v)}" for k, v in value.items() if v is not None)
    elif isinstance(value, list):
        text = ",".join(_scalar(v) for v in value)
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scalar(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def table(rows: Iterable[dict[str, Any]], columns: Sequence[Column], out: TextIO | None = None) -> int:
    """Print rows under a header; returns how many rows were printed."""
    out = out or sys.stdout
    cells = [[cell(fn(row)) for _, fn in columns] for row in rows]
    headers = [name for name, _ in columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    print(line(headers), file=out)
    for r in cells:
        print(line(r), file=out)
    out.flush()
    return len(cells)


def fields(pairs: Sequence[tuple[str, Any]], out: TextIO | None = None) -> None:
    """``key: value`` lines with aligned values (one record)."""
    out = out or sys.stdout
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key + ':':<{width + 1}} {cell(value, limit=200)}", file=out)
    out.flush()


def note(message: str) -> None:
    """A hint for people (stderr, so that stdout stays clean for pipes)."""
    print(message, file=sys.stderr, flush=True)
