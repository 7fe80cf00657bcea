"""``mdm events dead-letter`` (list the events the outbox gave up on) and ``mdm events
dead-letter replay (--all | ID ...)`` (put them back for delivery), through the admin API.

``mdm events`` itself (the event list) is built by ``client_commands``; this module adds its
actions to that parser. Light on purpose, like every client command parser.
"""

from __future__ import annotations

import argparse

from mdm.cli import client_commands, output
from mdm.cli.api_cmd import API, leaf, list_page, more_hint, paging, positive_id
from mdm.cli.client import ApiClient
from mdm.cli.common import CliError, Subparsers
from mdm.cli.output import Column

DEAD_COLUMNS: list[Column] = [
    ("ID", lambda e: e["id"]),
    ("TYPE", lambda e: e["type"]),
    ("DEVICE", lambda e: e["device_id"]),
    ("CREATED", lambda e: output.when(e["created_at"])),
    ("DEAD SINCE", lambda e: output.when(e["dead_at"])),
    ("REFUSALS", lambda e: e["refusals"]),
    ("WHY", lambda e: e["last_error"]),
]


def register(sub: Subparsers) -> None:
    if "events" not in sub.choices:
        client_commands.register(sub)
    events = sub.choices["events"]
    actions = events.add_subparsers(dest="action", metavar="ACTION", required=False)
    p = leaf(actions, "dead-letter", dead_letter_list,
             "list events the core server refused or that aged out ('replay' puts them back)")
    p.add_argument("--type", help="only events of this type")
    p.add_argument("--device", type=int, metavar="ID", help="only events of this device")
    paging(p)
    replay = p.add_subparsers(dest="dead_action", metavar="ACTION", required=False)
    r = leaf(replay, "replay", dead_letter_replay,
             "put dead-lettered events back in the outbox (delivered after newer events)")
    r.add_argument("ids", nargs="*", metavar="ID", help="event ids (see mdm events dead-letter)")
    r.add_argument("--all", action="store_true", help="every dead-lettered event")


def dead_letter_list(args: argparse.Namespace, client: ApiClient) -> int:
    page = list_page(args, client, f"{API}/events/dead-letter", {"type": args.type, "device": args.device})
    if args.json:
        output.emit_json(page)
    elif page["items"]:
        output.table(page["items"], DEAD_COLUMNS)
        more_hint(page, "dead letters")
    else:
        output.note("no dead-lettered events")
    return 0


def dead_letter_replay(args: argparse.Namespace, client: ApiClient) -> int:
    if args.all == bool(args.ids):
        raise CliError("give event ids, or --all (not both)", exit_code=2)
    ids = [positive_id(i, "event id") for i in args.ids]
    if len(ids) > 1000:
        raise CliError("at most 1000 ids at a time (or --all)", exit_code=2)
    result = client.post(f"{API}/events/dead-letter/replay", {"all": True} if args.all else {"ids": ids})
    if args.json:
        output.emit_json(result)
    else:
        print(f"{result['requeued']} event(s) put back in the outbox")
    return 0
