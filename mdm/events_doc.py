"""``docs/events.md``: the event catalog rendered from the declared types.

``python -m mdm.events_doc > docs/events.md`` regenerates the file; ``python -m mdm.events_doc
--check docs/events.md`` exits 1 when it is stale. The composed build (``mdm.plugins``) and the
runtime are imported so that every catalog module a running server loads is loaded; then every
``mdm/*/event_types*.py`` is imported as well, so a catalog that nothing wires yet is still
listed. The output is sorted: the same tree gives the same text.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import json
import sys
import tokenize
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mdm
import mdm.plugins
import mdm.server.runtime
from mdm.core.events import EventBody, EventType
from mdm.db.enums import Severity

REGENERATE = "python -m mdm.events_doc > docs/events.md"

# Areas in the order of the document; a type's area is found by ``area_of``.
AREAS: tuple[tuple[str, str], ...] = (
    ("enrollment", "Enrollment"),
    ("device", "Device"),
    ("command", "Command"),
    ("push", "Push"),
    ("certificates", "Certificates"),
    ("policy", "Policy"),
    ("security", "Security"),
    ("audit", "Audit"),
    ("service", "Service"),
    ("core link", "Core link"),
    ("android", "Android (KES)"),
    ("eas", "Exchange ActiveSync (EAS)"),
    ("other", "Other"),
)
_BY_MODULE = {
    "mdm.enroll": "enrollment",
    "mdm.ios": "device",
    "mdm.kes": "android",
    "mdm.pki": "certificates",
    "mdm.scep": "certificates",
    "mdm.policies": "policy",
    "mdm.push": "push",
    "mdm.server": "service",
    "mdm.reporting": "core link",
    "mdm.eas": "eas",
    "mdm.core.event_types_audit": "audit",
}
_BY_NAME = {
    "device_enrolled": "enrollment",
    "device_reauthenticated": "enrollment",
    "device_unenrolled": "enrollment",
    "device_deleted": "device",
    "device_status_changed": "device",
    "devices_seen": "device",
    "group_moved": "device",
    "push_token_updated": "push",
    "push_failures_aggregated": "push",
    "device_identity_renewed": "certificates",
}


# What a field means where its model says nothing (no ``description=``, no source comment): the
# names the catalog uses alike in many types.
GLOSSARY: dict[str, str] = {
    "by": "Who did it: the admin API token's name, or `cli:<os user>` for a local command",
    "created_by": "Who sent it: the admin API token's name (or `cli:<os user>`)",
    "command": "The command's GUID (as in `GET /api/v1/commands/{guid}`)",
    "commands": "[device id, command GUID] pairs",
    "command_type": "The command's type in the command library (DeviceLock, Wipe, ...)",
    "identifier": "The device's identifier: the UDID (iOS) or the Android id (KES)",
    "enrollment_id": "The enrollment (one-time link or file) it came from",
    "serial": "A certificate serial number (hex)",
    "cert_serial": "The device certificate's serial number (hex)",
    "renews_serial": "The serial number of the certificate this one renews",
    "bound_serial": "The serial number of the certificate bound to the device",
    "not_after": "End of validity (RFC 3339, UTC)",
    "subject": "The certificate's subject (RFC 4514)",
    "cert_type": "The certificate type: mobile, mail, vpn or server",
    "source": "The certificate source that issued it (internal: the built-in CA)",
    "reason": "Why, as a short machine-readable code",
    "message": "What the client was told (human-readable)",
    "error": "What went wrong (human-readable)",
    "peer": "The client's IP address (behind a trusted proxy: the one it forwarded)",
    "path": "The request path",
    "name": "The policy's name",
    "policy_id": "The policy's id",
    "group_id": "The administration group's id",
    "group": "The administration group's id",
    "revision": "The policy's revision after the change",
    "profile": "The policy profile's name",
    "settings": "How many settings it holds",
    "active": "Whether it is active",
    "priority": "The profile's priority (higher wins)",
    "bulk": "The bulk operation's id (`GET /api/v1/bulk/{id}`)",
    "targeted": "Devices the bulk operation targets",
    "queued": "Devices a command was queued for",
    "skipped": "Devices skipped (see `GET /api/v1/bulk/{id}/skipped`)",
    "skipped_reasons": "Skipped devices per reason",
    "count": "How many",
    "status": "The new status",
    "info": "The device's or the service's explanation",
    "topic": "The APNs topic of the MDM push certificate",
    "transaction_id": "The SCEP transactionID",
    "request_id": "The pending SCEP request's id",
    "model": "The device model",
    "os_version": "The operating system version",
    "serial_number": "The device's hardware serial number",
    "commands_failed": "Active commands failed with it",
    "user": "The enrollment's user (name or e-mail)",
    "platform": "ios or android",
    "delivery": "link (a one-time URL) or file",
    "identity": "How the device gets its identity certificate: pkcs12 or scep",
    "mdm_profile_identifier": "The PayloadIdentifier of the MDM profile it installs",
    "for_device_id": "The device it re-enrolls, if any",
    "to": "The e-mail address",
    "at": "When the device said it happened (RFC 3339)",
    "since": "Start of the interval (RFC 3339, UTC)",
    "until": "End of the interval (RFC 3339, UTC)",
    "interval_seconds": "The length of the interval",
    "days_left": "Whole days until it expires",
    "protocol": "ios or kes",
    "version": "The service's version",
    "pid": "The process id",
    "identity_source": "How the device proved its identity: signature (Mdm-Signature), tls or header",
}


def load_catalog() -> dict[str, tuple[EventType, str]]:
    """Every type the catalog modules declare, by name, with the module that declares it."""
    root = Path(mdm.__file__).parent
    for path in sorted(root.glob("*/event_types*.py")):
        importlib.import_module(f"mdm.{path.parent.name}.{path.stem}")
    where: dict[int, str] = {}
    for name, module in sorted(sys.modules.items()):
        if name.startswith("mdm.") and name.rsplit(".", 1)[-1].startswith("event_types"):
            for value in vars(module).values():
                if isinstance(value, EventType):
                    where.setdefault(id(value), name)
    # Only the catalog modules' types: a process may hold others (tests declare their own).
    return {n: (t, where[id(t)]) for n, t in sorted(EventType.declared.items()) if id(t) in where}


def area_of(name: str, module: str) -> str:
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith("security_"):
        return "security"
    if module in _BY_MODULE:
        return _BY_MODULE[module]
    package = module.rsplit(".", 1)[0]
    if package in _BY_MODULE:
        return _BY_MODULE[package]
    for prefix, area in (("enrollment_", "enrollment"), ("command", "command"), ("bulk_", "command"),
                         ("push_", "push"), ("cert_", "certificates"), ("policy_", "policy")):
        if name.startswith(prefix):
            return area
    return "device" if module == "mdm.core.event_types" else "other"


def _comments(model: type[EventBody]) -> dict[str, str]:
    """The source comment beside a field, or on the lines just above it, by field name."""
    found: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, EventBody)) or klass is EventBody:
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        lines = {  # comments after code, by line number
            tok.start[0]: tok.string.lstrip("#").strip()
            for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT and not tok.line.strip().startswith("#")
        }
        pending: list[str] = []
        for number, line in enumerate(source.splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("#"):
                pending.append(stripped.lstrip("#").strip())
                continue
            field = stripped.split(":", 1)[0]
            if field.isidentifier() and field in model.model_fields and ":" in stripped:
                text = " ".join([*pending, lines.get(number, "")]).strip()
                if text:
                    found[field] = text
            pending = []
    return found


def _type(schema: Mapping[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(_type(s) for s in schema["prefixItems"]) + "]"
        items = schema.get("items")
        return f"list of {_type(items)}" if items else "list"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"object of {_type(extra)}" if isinstance(extra, dict) and extra else "object"
    if kind == "null":
        return "null"
    return str(kind) if kind else "any"


def field_rows(model: type[EventBody]) -> list[tuple[str, str, bool, str]]:
    """(field, type, required, description) of the body model, in declaration order."""
    schema = model.model_json_schema()
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    notes = _comments(model)
    rows = []
    for name, prop in props.items():
        text = prop.get("description") or notes.get(name) or GLOSSARY.get(name, "")
        text = text[:1].upper() + text[1:]
        if name not in required and "default" in prop:
            shown = json.dumps(prop["default"])
            text = f"{text} (default {shown})".strip() if shown != "null" else text
        rows.append((name, _type(prop), name in required, text))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


INTRO = """# Event catalog

<!-- Generated by `{regenerate}` from the declared event types: do not edit by hand.
     tests/test_events_doc.py fails when this file is stale. -->

An **event** reports something that happened in this service: a device enrolled, a command
completed, a certificate expired, an administrator changed a policy. Each is written to the
`events` table (the transactional outbox) **in the same transaction as the state change it
reports**, so a change is never recorded without its event, nor an event without its change.
Events are listed by `GET /api/v1/events` and `mdm events`, and delivered to the core server in
order per device.

Every event has this envelope:

| Field | Type | Meaning |
|---|---|---|
| `uuid` | string (UUID) | Unique id of the event; the **idempotency key** the core server de-duplicates on |
| `type` | string | One of the types below |
| `severity` | string | `info`, `warning`, `functional_failure` or `critical` (see below) |
| `created_at` | string (RFC 3339, UTC) | When the event was written (its transaction's time) |
| `device_id` | integer or null | The device it is about, if any |
| `user_id` | integer or null | The user it is about, if any |
| `body` | object | The type's fields, as listed below; unknown fields are never sent |

Severities, least to most severe: {severities}. Some types say their severity varies (e.g.
`kes_agent_event` carries the agent's); the declared one is the usual one. Body fields that are
not required are left out when the service does not know them.

{count} event types are declared.

## Contents

"""


def render(catalog: Mapping[str, tuple[EventType, str]] | None = None) -> str:
    catalog = load_catalog() if catalog is None else catalog
    grouped: dict[str, list[tuple[EventType, str]]] = {key: [] for key, _ in AREAS}
    for name, (kind, module) in sorted(catalog.items()):
        grouped[area_of(name, module)].append((kind, module))
    out = [INTRO.format(
        regenerate=REGENERATE, count=len(catalog),
        severities=" < ".join(f"`{s.value}`" for s in Severity),
    )]
    for key, title in AREAS:
        if grouped[key]:
            names = ", ".join(f"[`{k.name}`](#{k.name})" for k, _ in grouped[key])
            out.append(f"- **{title}**: {names}\n")
    for key, title in AREAS:
        if grouped[key]:
            out.append(f"\n## {title}\n")
            out.extend(_section(kind, module) for kind, module in grouped[key])
    return "".join(out)


def _section(kind: EventType, module: str) -> str:
    path = module.replace(".", "/") + ".py" if module else "?"
    parts = [
        f"\n### {kind.name}\n\n",
        f"Severity `{kind.severity.value}` · body `{kind.body.__name__}` · declared in `{path}`\n\n",
        f"{kind.description.strip()}.\n\n" if not kind.description.rstrip().endswith(".")
        else f"{kind.description.strip()}\n\n",
    ]
    rows = field_rows(kind.body)
    if rows:
        parts.append("| Field | Type | Required | Description |\n|---|---|---|---|\n")
        parts.extend(
            f"| `{n}` | {_cell(t)} | {'yes' if r else 'no'} | {_cell(d)} |\n" for n, t, r, d in rows
        )
    else:
        parts.append("The body is empty.\n")
    if kind.example is not None:
        parts.append("\nExample body:\n\n```json\n" + json.dumps(kind.example, indent=2) + "\n```\n")
    return "".join(parts)


def check(path: Path, text: str) -> str | None:
    """None when ``path`` holds ``text``; otherwise what is wrong and how to fix it."""
    try:
        current = path.read_text(encoding="utf-8")
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror or exc}); regenerate it with `{REGENERATE}`"
    if current == text:
        return None
    return f"{path} is stale: it differs from the declared event types; regenerate it with `{REGENERATE}`"


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mdm.events_doc", description=__doc__.split("\n")[0])
    parser.add_argument("--check", metavar="FILE", type=Path, help="exit 1 if FILE is not up to date")
    args = parser.parse_args(list(argv) if argv is not None else None)
    text = render()
    if args.check is not None:
        problem = check(args.check, text)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
