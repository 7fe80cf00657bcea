"""The cmdlets of the fake Exchange organisation, one function each, over an ``OrgStore``.

Each takes the parameters as received (name -> value; a switch is True, ``-Confirm:$false`` is
False), binds them like PowerShell (``exchange_org_params.bind``), and returns the objects it
writes or raises the ``ExchangeFault`` Exchange would write. Values are used verbatim: a name with
quotes, ``;`` or ``$(...)`` is just that name. ``exchange_org.Organisation`` holds the lock.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from mdm.devfakes.exchange_org_model import (
    ACCEPTED_DOMAIN_TYPES,
    COMMAND_TYPES,
    ExchangeFault,
    PolicyEntry,
    PSOut,
    SessionState,
)
from mdm.devfakes.exchange_org_params import (
    DOMAIN_CONTROLLER,
    as_bool,
    as_text,
    bind,
    command_not_found,
    conversion,
    default_settings,
    invalid,
    missing_parameter,
    parameter_set,
    policy_param_names,
    settings_from,
    settings_view,
)
from mdm.devfakes.exchange_org_store import OrgStore

DEFAULT_RESULT_SIZE = 1000
_PARTNERSHIP_FILTER = "hasactivesyncdevicepartnership -eq $true"


@dataclass(slots=True)
class Ctx:
    store: OrgStore
    name: str  # the cmdlet name as the server knows it (canonical case)
    modern: bool  # called by its 2013+ name
    session: SessionState
    now: datetime
    commands: Sequence[str]  # the names this principal's session has (for Get-Command)


Handler = Callable[[Ctx, Mapping[str, Any]], list[PSOut]]


def _identity(ctx: Ctx, p: Mapping[str, Any], key: str = "Identity") -> str:
    if key not in p:
        raise missing_parameter(ctx.name, key)
    return as_text(ctx.name, key, p[key])


def _confirmed(ctx: Ctx, p: Mapping[str, Any], target: str) -> None:
    """A high-impact cmdlet asks for confirmation unless ``-Confirm:$false``; a remote session
    cannot prompt, so it fails the way a non-interactive host does."""
    if "Confirm" in p and not as_bool(ctx.name, "Confirm", p["Confirm"]):
        return
    raise ExchangeFault(
        f"Confirmation is required to perform the operation \"{ctx.name}\" on target \"{target}\", "
        "but the host does not support user interaction (prompting).",
        error_id=f"HostFunctionNotImplemented,{ctx.name}", category="InvalidOperation",
        exception_type="System.Management.Automation.Host.HostException", target=target)


def _result_size(ctx: Ctx, value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    if isinstance(value, bool):
        raise conversion(ctx.name, "ResultSize", value, "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]")
    try:
        size = int(value) if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise conversion(ctx.name, "ResultSize", value,
                         "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]") from None
    if size < 1:
        raise conversion(ctx.name, "ResultSize", value, "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]")
    return size


# ---- mailboxes ------------------------------------------------------------------------------


def get_cas_mailbox(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    p = bind(ctx.name, params, ("Identity", "Filter", "ResultSize"))
    if "Identity" in p and "Filter" in p:
        raise parameter_set(ctx.name)
    limit = _result_size(ctx, p.get("ResultSize", DEFAULT_RESULT_SIZE))
    forest = ctx.session.view_entire_forest
    default = ctx.store.default_policy().name
    if "Identity" in p:
        return [ctx.store.find_mailbox(ctx.name, _identity(ctx, p), forest=forest).out(default)]
    partnership_only = False
    if "Filter" in p:
        text = " ".join(as_text(ctx.name, "Filter", p["Filter"]).split()).lower()
        if text != _PARTNERSHIP_FILTER:
            raise ExchangeFault(
                f"Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": "
                f"\"Invalid filter syntax. For a description of the filter parameter syntax see the "
                f"command help. \"{p['Filter']}\"\"",
                error_id=f"ParameterBindingFailed,{ctx.name}", category="InvalidArgument",
                exception_type="System.Management.Automation.ParameterBindingException",
                target="Filter")
        partnership_only = True
    out: list[PSOut] = []
    for mbx in ctx.store.mailboxes.values():
        if limit is not None and len(out) >= limit:
            break  # Exchange also writes a warning that more results are available
        if (forest or mbx.domain == ctx.store.current_domain) and (
                mbx.has_partnership or not partnership_only):
            out.append(mbx.out(default))
    return out


def set_cas_mailbox(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    p = bind(ctx.name, params, ("Identity", "ActiveSyncEnabled", "ActiveSyncMailboxPolicy", "Confirm"))
    mbx = ctx.store.find_mailbox(ctx.name, _identity(ctx, p), forest=ctx.session.view_entire_forest)
    enabled = as_bool(ctx.name, "ActiveSyncEnabled", p["ActiveSyncEnabled"]) \
        if "ActiveSyncEnabled" in p else None
    policy: PolicyEntry | None = None
    if "ActiveSyncMailboxPolicy" in p and p["ActiveSyncMailboxPolicy"] is not None:
        name = as_text(ctx.name, "ActiveSyncMailboxPolicy", p["ActiveSyncMailboxPolicy"])
        policy = ctx.store.find_policy(ctx.name, name)
    # everything checked: change nothing before this line
    if enabled is not None:
        mbx.activesync_enabled = enabled
    if "ActiveSyncMailboxPolicy" in p:
        mbx.policy = policy.name if policy is not None else None
    return []


# ---- devices --------------------------------------------------------------------------------


def get_device_statistics(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    p = bind(ctx.name, params, ("Identity", "Mailbox"))
    forest = ctx.session.view_entire_forest
    if "Identity" in p and "Mailbox" in p:
        raise parameter_set(ctx.name)
    if "Mailbox" in p:
        mbx = ctx.store.find_mailbox(ctx.name, _identity(ctx, p, "Mailbox"), forest=forest)
        return [dev.out(ctx.modern) for dev in mbx.devices.values()]
    return [ctx.store.find_device(ctx.name, _identity(ctx, p), forest=forest).out(ctx.modern)]


def clear_device(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    allowed = ("Identity", "Confirm", "NotificationEmailAddresses", *(("Cancel",) if ctx.modern else ()))
    p = bind(ctx.name, params, allowed)
    dev = ctx.store.find_device(ctx.name, _identity(ctx, p), forest=ctx.session.view_entire_forest)
    _confirmed(ctx, p, dev.identity)
    if "Cancel" in p and as_bool(ctx.name, "Cancel", p["Cancel"]):
        if dev.wipe_ack is not None:
            raise invalid(ctx.name, f"The wipe of '{dev.identity}' was already acknowledged by the "
                          "device and can't be canceled.", category="InvalidOperation",
                          target=dev.identity)
        dev.wipe_requested = dev.wipe_sent = None
        return []
    # A new request (also on a device already wiped) starts over: pending until the next sync.
    dev.wipe_requested = ctx.now
    dev.wipe_sent = None
    dev.wipe_ack = None
    return []


def remove_device(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    p = bind(ctx.name, params, ("Identity", "Confirm"))
    dev = ctx.store.find_device(ctx.name, _identity(ctx, p), forest=ctx.session.view_entire_forest)
    _confirmed(ctx, p, dev.identity)
    ctx.store.remove_device(dev)
    return []


# ---- ActiveSync mailbox policies ------------------------------------------------------------


def _default_param(ctx: Ctx) -> str:
    return "IsDefault" if ctx.modern else "IsDefaultPolicy"


def _policy_out(ctx: Ctx, policy: PolicyEntry) -> PSOut:
    return policy.out(ctx.modern, settings_view(policy.settings, ctx.modern))


def _make_default(ctx: Ctx, policy: PolicyEntry) -> None:
    for other in ctx.store.policies.values():
        other.is_default = other is policy


def get_policy(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    p = bind(ctx.name, params, ("Identity",))
    if "Identity" in p:
        return [_policy_out(ctx, ctx.store.find_policy(ctx.name, _identity(ctx, p)))]
    return [_policy_out(ctx, policy) for policy in ctx.store.policies.values()]


def new_policy(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    flag = _default_param(ctx)
    p = bind(ctx.name, params, ("Name", flag, "Confirm", *policy_param_names(ctx.modern)))
    name = _identity(ctx, p, "Name")
    settings = settings_from(ctx.name, p, ctx.modern)
    make_default = as_bool(ctx.name, flag, p[flag]) if flag in p else False
    if name.lower() in ctx.store.policies:
        raise ExchangeFault(
            f"Active Directory operation failed on {DOMAIN_CONTROLLER}. The object "
            f"'CN={name},CN=Mobile Mailbox Policies,CN=First Organization,CN=Microsoft Exchange,"
            "CN=Services,CN=Configuration' already exists.",
            error_id=f"{ctx.name},{ctx.name.replace('-', '')}", category="NotSpecified",
            exception_type="Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException",
            target=name)
    policy = PolicyEntry(name=name, guid=str(uuid.uuid4()), is_default=False,
                         settings={**default_settings(), **settings}, when_changed=ctx.now)
    ctx.store.add_policy(policy)
    if make_default:
        _make_default(ctx, policy)
    return [_policy_out(ctx, policy)]


def set_policy(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    flag = _default_param(ctx)
    p = bind(ctx.name, params, ("Identity", "Name", flag, "Confirm", *policy_param_names(ctx.modern)))
    policy = ctx.store.find_policy(ctx.name, _identity(ctx, p))
    settings = settings_from(ctx.name, p, ctx.modern)
    new_name = as_text(ctx.name, "Name", p["Name"]) if "Name" in p else None
    if new_name is not None and new_name.lower() != policy.name.lower() \
            and new_name.lower() in ctx.store.policies:
        raise invalid(ctx.name, f"An ActiveSync mailbox policy named '{new_name}' already exists.",
                      target=new_name)
    make_default = as_bool(ctx.name, flag, p[flag]) if flag in p else None
    if make_default is False and policy.is_default:
        raise invalid(ctx.name, f"'{policy.name}' is the default policy. Make another policy the "
                      "default instead of clearing this flag.", category="InvalidOperation",
                      target=policy.name)
    # everything checked: change nothing before this line
    policy.settings.update(settings)
    policy.when_changed = ctx.now
    if new_name is not None and new_name != policy.name:
        ctx.store.rename_policy(policy, new_name)
    if make_default:
        _make_default(ctx, policy)
    return []


def remove_policy(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    p = bind(ctx.name, params, ("Identity", "Confirm"))
    policy = ctx.store.find_policy(ctx.name, _identity(ctx, p))
    if policy.is_default:
        raise invalid(ctx.name, f"The policy '{policy.name}' is the default ActiveSync mailbox "
                      "policy and can't be removed. Make another policy the default first.",
                      category="InvalidOperation", target=policy.name)
    _confirmed(ctx, p, policy.name)
    ctx.store.remove_policy(policy)
    return []


# ---- organisation and session ---------------------------------------------------------------


def get_accepted_domain(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    p = bind(ctx.name, params, ("Identity",))
    wanted = _identity(ctx, p).lower() if "Identity" in p else None
    out = [PSOut(ACCEPTED_DOMAIN_TYPES, {
        "Identity": domain, "Name": domain, "DomainName": domain, "DomainType": "Authoritative",
        "Default": domain == ctx.store.current_domain,
    }, domain) for domain in ctx.store.domains if wanted in (None, domain)]
    if wanted is not None and not out:
        raise invalid(ctx.name, f"The operation couldn't be performed because object '{wanted}' "
                      f"couldn't be found on '{DOMAIN_CONTROLLER}'.", category="ObjectNotFound",
                      target=wanted,
                      exception_type="Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException")
    return out


def set_ad_server_settings(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    p = bind(ctx.name, params, ("ViewEntireForest", "Confirm"))
    if "ViewEntireForest" in p:
        ctx.session.view_entire_forest = as_bool(ctx.name, "ViewEntireForest", p["ViewEntireForest"])
    return []


def get_command(ctx: Ctx, params: Mapping[str, Any]) -> list[PSOut]:
    p = bind(ctx.name, params, ("Name", "CommandType"))
    raw = p.get("Name", "*")
    patterns = [str(v) for v in raw] if isinstance(raw, (list, tuple)) else [str(raw)]
    out: list[PSOut] = []
    for pattern in patterns:
        wild = bool(re.search(r"[*?\[]", pattern))
        found = [c for c in ctx.commands if fnmatchcase(c.lower(), pattern.lower())]
        if not found and not wild:
            raise command_not_found(pattern)
        out.extend(PSOut(COMMAND_TYPES, {"Name": c, "CommandType": "Function", "ModuleName": "",
                                         "Definition": ""}, c) for c in found)
    return out


HANDLERS: Mapping[str, Handler] = {
    "Get-CASMailbox": get_cas_mailbox,
    "Set-CASMailbox": set_cas_mailbox,
    "Get-ActiveSyncDeviceStatistics": get_device_statistics,
    "Clear-ActiveSyncDevice": clear_device,
    "Remove-ActiveSyncDevice": remove_device,
    "Get-ActiveSyncMailboxPolicy": get_policy,
    "New-ActiveSyncMailboxPolicy": new_policy,
    "Set-ActiveSyncMailboxPolicy": set_policy,
    "Remove-ActiveSyncMailboxPolicy": remove_policy,
    "Get-AcceptedDomain": get_accepted_domain,
    "Set-AdServerSettings": set_ad_server_settings,
    "Get-Command": get_command,
}
