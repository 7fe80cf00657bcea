"""The audit event types: every administrator action through the admin API or the local CLI
(who, what, on what, from where, with which outcome; the event's own ``created_at`` says when).
Written by ``mdm.core.audit``; never a secret, never a whole request body."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mdm.core.events import EventBody, EventType
from mdm.db.enums import Severity

# A target value: an id, a GUID, a serial, a name, a short list of them.
TargetValue = str | int | bool | list[str] | list[int]


class AdminAction(EventBody):
    # Token name (API) or operating-system user (local CLI).
    actor: str
    # The API token's id; None for a local CLI action.
    token_id: int | None = None
    # api: through the admin API; cli: a local CLI command on the server's machine.
    via: Literal["api", "cli"]
    # The API operation id (e.g. ``create_token``) or the CLI command (e.g. ``tokens create --local``).
    operation: str
    # The HTTP method (API only).
    method: str | None = None
    # The route as declared (``/api/v1/devices/{id}/commands``), not the request's path.
    route: str | None = None
    # What the action is about: path parameters and the identifying, non-secret fields of the body.
    target: dict[str, TargetValue] = Field(default_factory=dict)
    # The client's address (a trusted proxy's forwarded address when the TCP peer is one), or
    # ``local:<hostname>`` for the CLI.
    source: str
    # The TCP peer when ``source`` came from a trusted proxy's header.
    proxy: str | None = None
    # done: the change committed (in the same transaction as this event); failed: an error of ours
    # (5xx), nothing changed. Refusals (4xx) change nothing and are not audited, but for a missing
    # scope (admin_action_denied).
    outcome: Literal["done", "failed"]
    # The HTTP status of a failure.
    status: int | None = None
    # The error code of a failure (``internal``, ...), never its message.
    error: str | None = None
    # The request's X-Request-Id, as in the access and error logs (API only).
    request_id: str | None = None


class AdminActionDenied(EventBody):
    # The token's name.
    actor: str
    # The token's id.
    token_id: int
    # The API operation id asked for.
    operation: str
    # The HTTP method.
    method: str
    # The route as declared.
    route: str
    # The path parameters (the body is not read).
    target: dict[str, TargetValue] = Field(default_factory=dict)
    # The client's address (a trusted proxy's forwarded address when the TCP peer is one).
    source: str
    # The TCP peer when ``source`` came from a trusted proxy's header.
    proxy: str | None = None
    # The scope the route requires, which the token lacks.
    required_scope: str
    # The request's X-Request-Id.
    request_id: str | None = None


ADMIN_ACTION = EventType(
    "admin_action", Severity.INFO, AdminAction,
    "An administrator's action through the admin API (a token) or the local CLI (an OS user): "
    "written in the same transaction as the change it records (outcome done), or on its own when "
    "the request failed (5xx) and changed nothing. Read-only requests and refused ones (bad input, "
    "not found, conflict) are not audited; a missing scope is admin_action_denied.",
    example={
        "actor": "ops-console", "token_id": 3, "via": "api", "operation": "send_command",
        "method": "POST", "route": "/api/v1/devices/{id}/commands",
        "target": {"id": 42, "type": "Block"}, "source": "198.51.100.7", "proxy": "10.0.0.5",
        "outcome": "done", "request_id": "a1b2c3d4e5000001",
    },
)
ADMIN_ACTION_DENIED = EventType(
    "admin_action_denied", Severity.WARNING, AdminActionDenied,
    "A valid API token asked for a change its scopes do not allow (answered 403); nothing changed.",
    example={
        "actor": "helpdesk", "token_id": 7, "operation": "delete_device", "method": "DELETE",
        "route": "/api/v1/devices/{id}", "target": {"id": 42}, "source": "198.51.100.7",
        "required_scope": "devices:delete", "request_id": "a1b2c3d4e5000002",
    },
)
