"""``mdm command send --all|--group|--devices``, ``mdm command bulk``, ``mdm command bulk-recall``:
bulk operations through the admin API, with a progress bar on stderr while they are queued (one
redrawn line on a terminal, a line every few seconds otherwise)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from mdm.cli import output
from mdm.cli.api_cmd import API, list_page, more_hint
from mdm.cli.client import ApiClient

DONE = ("queued", "recalled", "failed")
POLL_SECONDS = 0.5
PLAIN_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width if total <= 0 else min(width, width * done // total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def progress_line(op: dict[str, Any], *, delivery: bool = False) -> str:
    total = int(op["targeted"]) or 1
    if delivery:
        done = total - int(op.get("pending") or 0) - int(op["skipped"])
        label = f"delivered {op.get('delivered') or 0}, completed {op.get('completed') or 0}, " \
                f"failed {op.get('failed') or 0}, pending {op.get('pending') or 0}"
    else:
        done = int(op["queued"]) + int(op["skipped"])
        label = f"queued {op['queued']}, skipped {op['skipped']}"
    percent = 100 * done // total
    return f"bulk {op['id']} {op['type']} {_bar(done, total)} {percent:3d}% of {op['targeted']}: {label}"


class Progress:
    """Draws progress on ``stream``: redrawn in place on a terminal, else a line every few seconds."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.clock = clock
        self._last = -PLAIN_EVERY
        self._drawn = False

    def show(self, line: str, *, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
            self._drawn = not final
        elif final or self.clock() - self._last >= PLAIN_EVERY:
            self.stream.write(line + "\n")
            self._last = self.clock()
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def follow(client: ApiClient, bulk_id: int, *, wait_delivery: bool, stream: TextIO = sys.stderr,
           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll GET /bulk/{id} until queuing has ended (and, with ``wait_delivery``, until nothing of
    it is left queued or in flight), drawing progress; the last answer."""
    progress = Progress(stream)
    try:
        while True:
            op: dict[str, Any] = client.get(f"{API}/bulk/{bulk_id}")
            queuing = op["state"] not in DONE
            delivering = wait_delivery and op["state"] == "queued" and (op.get("pending") or 0) > 0
            if not queuing and not delivering:
                progress.show(progress_line(op, delivery=wait_delivery), final=True)
                return op
            progress.show(progress_line(op, delivery=not queuing))
            sleep(POLL_SECONDS)
    finally:
        progress.close()


def print_summary(op: dict[str, Any]) -> None:
    print(f"bulk operation {op['id']} ({op['type']} to {_target(op)}): {op['state']}")
    counts = ["targeted", "queued", "skipped", "woken", "delivered", "completed", "failed", "pending",
              "recalled"]
    print("  " + ", ".join(f"{k} {op[k]}" for k in counts if op.get(k) is not None))
    if op.get("error"):
        print(f"  error: {op['error']}")
    reasons = op.get("skipped_reasons") or {}
    if reasons:
        print("  skipped:")
        for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"    {n:>8}  {reason}")
        print(f"  (mdm command bulk {op['id']} --skipped lists the devices)")


def _target(op: dict[str, Any]) -> str:
    target = op["target"]
    if target["kind"] == "group":
        return f"group {target['group']} and its subgroups"
    return "every device" if target["kind"] == "all" else "a list of devices"


def send(
    client: ApiClient, args: argparse.Namespace, target: Any, type_: str, cmd_args: dict[str, Any]
) -> int:
    op = client.post(f"{API}/commands", {"devices": target, "type": type_, "args": cmd_args})
    if args.no_wait:
        if args.json:
            output.emit_json(op)
        else:
            print(op["id"])
        return 0
    op = follow(client, op["id"], wait_delivery=args.wait_delivery)
    if args.json:
        output.emit_json(op)
    else:
        print_summary(op)
    return 1 if op["state"] == "failed" else 0


def show(args: argparse.Namespace, client: ApiClient) -> int:
    if args.skipped:
        page = list_page(args, client, f"{API}/bulk/{args.bulk_id}/skipped", {})
        if args.json:
            output.emit_json(page)
            return 0
        output.table(page["items"], [("DEVICE", lambda x: x["device"]), ("REASON", lambda x: x["reason"])])
        more_hint(page, "skipped devices")
        return 0
    op = client.get(f"{API}/bulk/{args.bulk_id}")
    if args.json:
        output.emit_json(op)
    else:
        print_summary(op)
    return 0


def recall(args: argparse.Namespace, client: ApiClient) -> int:
    op = client.delete(f"{API}/bulk/{args.bulk_id}")
    if op.get("state") == "recalling":  # 202: longer than the request's budget, the server goes on
        op = follow(client, args.bulk_id, wait_delivery=False)
    if args.json:
        output.emit_json(op)
    else:
        print_summary(op)
    return 0
