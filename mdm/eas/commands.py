"""The EAS translation of the command library (DESIGN §3, §8): library command + arguments -> a
small description of the Exchange operation, stored as the command's payload. The partnerships
and mailboxes it acts on are resolved when it runs (``service_commands``): discovery may have
changed them since it was queued.

| library type      | operation | cmdlets (on every partnership / mailbox of the device)       |
|-------------------|-----------|---------------------------------------------------------------|
| Wipe              | wipe      | Clear-ActiveSyncDevice (Clear-MobileDevice)                   |
| Remove            | remove    | Remove-ActiveSyncDevice (Remove-MobileDevice)                 |
| RefreshDeviceInfo | refresh   | Get-ActiveSyncDeviceStatistics -Mailbox                        |
| Enable/DisableActiveSync | activesync | Set-CASMailbox -ActiveSyncEnabled                     |
| AssignEasPolicy   | policy    | Set-CASMailbox -ActiveSyncMailboxPolicy                       |

``AssignEasPolicy`` names a policy; one this service does not know (not in ``eas_policies``, or
vanished from Exchange) is refused at enqueue when the known names are loaded (``known_policies``,
kept by the executor); Exchange refuses it anyway if it disappeared meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mdm.core.errors import InvalidArgument, Unsupported
from mdm.core.library import BulkKey, DeviceFacts
from mdm.db.models import Device
from mdm.eas import cmdlets
from mdm.eas.cmdlets import Cmdlet


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(_Args):
    pass


class PolicyArgs(_Args):
    policy: str = Field(min_length=1, max_length=255,
                        description="the name of an ActiveSync mailbox policy known from Exchange")


# library type -> (operation, argument model)
COMMANDS: dict[str, tuple[str, type[_Args]]] = {
    "Wipe": ("wipe", NoArgs),
    "Remove": ("remove", NoArgs),
    "RefreshDeviceInfo": ("refresh", NoArgs),
    "EnableActiveSync": ("activesync", NoArgs),
    "DisableActiveSync": ("activesync", NoArgs),
    "AssignEasPolicy": ("policy", PolicyArgs),
}


def _same_for_all(facts: DeviceFacts) -> Hashable:
    return None


class EasCommandTranslator:
    """``CommandTranslator`` for ``Protocol.EAS`` (registered by ``mdm.eas.plugin``).

    ``known_policies``: returns the names of the policies known from Exchange, or None while they
    are not loaded (then any name is accepted and Exchange decides)."""

    def __init__(self, known_policies: Callable[[], frozenset[str] | None] = lambda: None) -> None:
        self.known_policies = known_policies

    def _parse(self, command_type: str, args: dict[str, Any]) -> dict[str, Any]:
        entry = COMMANDS.get(command_type)
        if entry is None:
            raise Unsupported(f"{command_type} has no EAS translation", supported=sorted(COMMANDS))
        try:
            parsed = entry[1].model_validate(args or {})
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
            field = ".".join(str(p) for p in first["loc"]) or "(args)"
            raise InvalidArgument(f"{command_type}: {field}: {first['msg']}", field=field) from None
        if isinstance(parsed, PolicyArgs):
            known = self.known_policies()
            if known is not None and parsed.policy not in known:
                raise InvalidArgument(
                    f"AssignEasPolicy: policy: no ActiveSync mailbox policy named {parsed.policy!r} is "
                    "known from Exchange", field="policy", known=sorted(known)[:50])
        return parsed.model_dump()

    def translate(self, command_type: str, args: dict[str, Any], device: Device) -> dict[str, Any]:
        clean = self._parse(command_type, args)
        op = COMMANDS[command_type][0]
        payload: dict[str, Any] = {"op": op}
        if command_type in ("EnableActiveSync", "DisableActiveSync"):
            payload["enabled"] = command_type == "EnableActiveSync"
        if op == "policy":
            payload["policy"] = clean["policy"]
        return payload

    def check_args(self, command_type: str, args: dict[str, Any]) -> None:
        self._parse(command_type, args)

    def bulk_key(self, command_type: str, args: dict[str, Any]) -> BulkKey | None:
        """The payload depends on the arguments only: one variant for every EAS device."""
        return BulkKey(_same_for_all)

    def arg_schema(self, command_type: str) -> dict[str, Any] | None:
        entry = COMMANDS.get(command_type)
        return None if entry is None else entry[1].model_json_schema()


# ---- execution plan: the payload resolved against the device's partnerships when it runs ----------


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # "partnership" or "mailbox": what ``target`` names (and what vanishes on ObjectNotFound)
    target: str  # its Exchange identity
    cmdlet: Cmdlet


@dataclass(frozen=True, slots=True)
class Plan:
    op: str
    steps: tuple[Step, ...]
    partnerships: tuple[str, ...]  # the live partnerships the plan covers
    enabled: bool | None = None
    policy: str | None = None

    def summary(self, ok: Sequence[Step], vanished: Sequence[tuple[Step, Any]],
                refused: Sequence[tuple[Step, Any]], now: datetime) -> tuple[bool, str]:
        """(success, the command log's text) once every step ran (none transient)."""
        if not self.steps:
            return False, ("the device has no ActiveSync partnership left in Exchange (every one "
                           "vanished since discovery); nothing was sent")
        gone = [f"{step.kind} {step.target!r} no longer exists in Exchange" for step, _ in vanished]
        errors = [f"{exc.cmdlet}: {exc.message}" for _, exc in refused]
        done = list(ok) + ([s for s, _ in vanished] if self.op == "remove" else [])
        success = bool(done) and not errors
        if self.op == "wipe" and ok:
            text = (f"wipe requested at {now:%Y-%m-%d %H:%M:%S} UTC on {len(ok)} partnership(s): Exchange "
                    "sends it at the device's next sync and keeps wiping the device at every sync until "
                    "it is removed")
        elif self.op == "remove" and done:
            text = f"removed {len(done)} partnership(s) from Exchange; the device is no longer managed"
        elif self.op == "refresh" and ok:
            text = f"statistics read from {len(ok)} mailbox(es)"
        elif self.op == "activesync" and ok:
            text = (f"ActiveSync {'enabled' if self.enabled else 'disabled'} for "
                    + ", ".join(repr(s.target) for s in ok))
        elif self.op == "policy" and ok:
            text = (f"ActiveSync mailbox policy {self.policy!r} assigned to "
                    + ", ".join(repr(s.target) for s in ok))
        else:
            text = "nothing done"
        if not done:
            text = "; ".join(gone + errors) or text
        else:
            text = "; ".join([text] + ([] if self.op == "remove" else gone) + errors)
        return success, text


def plan_for(payload: dict[str, Any], command_type: str, targets: Sequence[Any]) -> Plan:
    """The cmdlets of a queued command. ``targets``: ``store_commands.Target`` rows (partnership,
    mailbox, vanished); vanished ones are left out."""
    op = payload.get("op") or COMMANDS.get(command_type, ("?", NoArgs))[0]
    live = [t for t in targets if not t.vanished]
    partnerships = tuple(t.partnership for t in live)
    mailboxes = list(dict.fromkeys(t.mailbox for t in live))
    if op == "wipe":
        steps = tuple(Step("partnership", p, cmdlets.clear_device(p)) for p in partnerships)
    elif op == "remove":
        steps = tuple(Step("partnership", p, cmdlets.remove_device(p)) for p in partnerships)
    elif op == "refresh":
        steps = tuple(Step("mailbox", m, cmdlets.get_device_statistics(mailbox=m)) for m in mailboxes)
    elif op == "activesync":
        enabled = bool(payload.get("enabled", command_type == "EnableActiveSync"))
        return Plan(op, tuple(Step("mailbox", m, cmdlets.set_cas_mailbox(m, activesync_enabled=enabled))
                              for m in mailboxes), partnerships, enabled=enabled)
    elif op == "policy":
        policy = str(payload.get("policy") or "")
        return Plan(op, tuple(Step("mailbox", m, cmdlets.set_cas_mailbox(m, policy=policy))
                              for m in mailboxes), partnerships, policy=policy)
    else:
        raise ValueError(f"unknown EAS operation {op!r}")
    return Plan(op, steps, partnerships)
